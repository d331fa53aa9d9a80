"""Similarities (pipeline step 4): per-row values, invariances and dtypes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from siamkit.similarity import SIMILARITIES, cosine, softmax_cross_entropy


def _randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_cosine_is_per_row_and_matches_torch():
    a, b = _randn(12, 7, seed=0), _randn(12, 7, seed=1)
    sim = cosine(a, b)
    assert sim.shape == (12,)
    torch.testing.assert_close(sim, F.cosine_similarity(a, b, dim=1).float())


def test_cosine_is_invariant_to_positive_scale_per_row():
    a, b = _randn(16, 8, seed=2), _randn(16, 8, seed=3)
    scale_a = torch.rand(16, 1, dtype=torch.float64) * 100 + 1e-2  # a different scale per row
    scale_b = torch.rand(16, 1, dtype=torch.float64) * 100 + 1e-2
    torch.testing.assert_close(cosine(a * scale_a, b * scale_b), cosine(a, b))


def test_cosine_flips_sign_under_negative_scale():
    a, b = _randn(16, 8, seed=4), _randn(16, 8, seed=5)
    torch.testing.assert_close(cosine(-3.0 * a, b), -cosine(a, b))


def test_cosine_is_symmetric():
    a, b = _randn(16, 8, seed=6), _randn(16, 8, seed=7)
    torch.testing.assert_close(cosine(a, b), cosine(b, a))


def test_cosine_is_within_minus_one_and_one():
    a, b = _randn(512, 3, seed=8), _randn(512, 3, seed=9)
    sim = cosine(torch.cat([a, a, a]), torch.cat([b, a, -a]))
    assert sim.min() >= -1.0 - 1e-6
    assert sim.max() <= 1.0 + 1e-6
    # The bounds are reached: identical rows give 1, opposite rows give -1.
    torch.testing.assert_close(sim[512:1024], torch.ones(512))
    torch.testing.assert_close(sim[1024:], -torch.ones(512))


def test_cosine_of_zero_row_is_finite():
    a = torch.zeros(2, 4)
    b = torch.ones(2, 4)
    sim = cosine(a, b)
    assert torch.isfinite(sim).all()
    torch.testing.assert_close(sim, torch.zeros(2))


@pytest.mark.parametrize("name", sorted(SIMILARITIES))
def test_bf16_inputs_give_float32_similarity(name):
    fn = SIMILARITIES[name]
    a, b = _randn(8, 16, seed=10).bfloat16(), _randn(8, 16, seed=11).bfloat16()
    sim = fn(a, b)
    assert sim.dtype == torch.float32
    torch.testing.assert_close(sim, fn(a.float(), b.float()))


def test_softmax_cross_entropy_is_minus_cross_entropy_per_row():
    p, z = _randn(6, 5, seed=12), _randn(6, 5, seed=13)
    sim = softmax_cross_entropy(p, z)
    assert sim.shape == (6,)
    # -H(softmax(z), softmax(p)) by hand: sum_d q_d log r_d.
    q = torch.exp(z) / torch.exp(z).sum(dim=1, keepdim=True)
    r = torch.exp(p) / torch.exp(p).sum(dim=1, keepdim=True)
    torch.testing.assert_close(sim, (q * torch.log(r)).sum(dim=1).float())
    assert (sim <= 0).all()


def test_softmax_cross_entropy_is_shift_invariant_per_row():
    # Softmax ignores a constant added to every channel of a row.
    p, z = _randn(6, 5, seed=14), _randn(6, 5, seed=15)
    shift = _randn(6, 1, seed=16) * 10
    torch.testing.assert_close(
        softmax_cross_entropy(p + shift, z - shift), softmax_cross_entropy(p, z)
    )
