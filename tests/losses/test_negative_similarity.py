"""Negative-similarity losses against independent references, in value and gradient.

Oracles: lightly's ``NegativeCosineSimilarity`` (test-only dependency) and the formulas of the
SimSiam paper written out here (arXiv:2011.10566v1, Eq. 1 and Sec. 4.5).
"""

from __future__ import annotations

import pytest
import torch
from lightly.loss import NegativeCosineSimilarity

from siamkit.losses import NEGATIVE_SIMILARITY_LOSSES, cross_entropy, negative_cosine
from tests.losses.conftest import assert_all_close, random_pair, value_and_grads

SHAPES = [(1, 3), (8, 16), (32, 64)]


def _cosine_formula(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-mean_i sum_d (p_i / ||p_i||) (z_i / ||z_i||), Eq. 1 of the paper."""
    p_unit = p / torch.sqrt((p * p).sum(dim=1, keepdim=True))
    z_unit = z / torch.sqrt((z * z).sum(dim=1, keepdim=True))
    return -(p_unit * z_unit).sum(dim=1).mean()


def _cross_entropy_formula(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-mean_i softmax(z_i) . log softmax(p_i), Sec. 4.5, written without torch's softmax."""
    z_exp = torch.exp(z - z.max(dim=1, keepdim=True).values)
    softmax_z = z_exp / z_exp.sum(dim=1, keepdim=True)
    log_softmax_p = p - torch.log(torch.exp(p).sum(dim=1, keepdim=True))
    return -(softmax_z * log_softmax_p).sum(dim=1).mean()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_negative_cosine_matches_lightly_value_and_gradient(shape, seed):
    # float32 in: siamkit computes in float32 whatever the input; compare at float32 tolerance.
    p, z = random_pair(shape, seed, torch.float32)
    mine = value_and_grads(negative_cosine, p, z)
    oracle = value_and_grads(NegativeCosineSimilarity(), p, z)
    assert_all_close(mine, oracle, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_negative_cosine_matches_paper_formula(shape):
    p, z = random_pair(shape, 2)
    mine = value_and_grads(negative_cosine, p, z)
    ref = value_and_grads(_cosine_formula, p, z)
    assert_all_close(mine, ref, rtol=1e-5, atol=1e-6)


def test_negative_cosine_of_known_pairs():
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 4.0]])
    z = torch.tensor([[5.0, 0.0], [0.0, 2.0], [-3.0, -4.0]])
    # cosines 1, 0, -1 -> mean 0 -> loss 0; a dropped minus or factor would change it.
    assert negative_cosine(p, z).item() == pytest.approx(0.0, abs=1e-7)
    assert negative_cosine(p[:1], z[:1]).item() == pytest.approx(-1.0)
    assert negative_cosine(p[2:], z[2:]).item() == pytest.approx(1.0)
    assert negative_cosine(p[:2], z[:2]).item() == pytest.approx(-0.5)


def test_negative_cosine_of_identical_inputs_is_minus_one():
    x = torch.randn(16, 32)
    assert negative_cosine(x, x).item() == pytest.approx(-1.0, abs=1e-6)
    assert negative_cosine(x, 7.0 * x).item() == pytest.approx(-1.0, abs=1e-6)


def test_negative_cosine_returns_scalar():
    p, z = random_pair((8, 4), 3, torch.float32)
    loss = negative_cosine(p, z)
    assert loss.shape == ()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_cross_entropy_matches_paper_formula_value_and_gradient(shape, seed):
    p, z = random_pair(shape, seed)
    mine = value_and_grads(cross_entropy, p, z)
    ref = value_and_grads(_cross_entropy_formula, p, z)
    assert_all_close(mine, ref, rtol=1e-5, atol=1e-6)


def test_cross_entropy_is_entropy_of_target_when_inputs_agree():
    # softmax(z) . log softmax(z) is minus the entropy H(softmax(z)); uniform logits give log D.
    d = 10
    z = torch.zeros(4, d)
    assert cross_entropy(z, z).item() == pytest.approx(torch.log(torch.tensor(d)).item())
    # And the minimum over p of the cross-entropy is at p = z (Gibbs' inequality).
    z = torch.randn(4, d)
    assert cross_entropy(z, z) < cross_entropy(torch.randn(4, d), z)


def test_cross_entropy_is_not_symmetric():
    p, z = random_pair((8, 16), 5)
    assert not torch.allclose(cross_entropy(p, z), cross_entropy(z, p))


def test_loss_registry_names_the_two_similarities():
    assert NEGATIVE_SIMILARITY_LOSSES["cosine"] is negative_cosine
    assert NEGATIVE_SIMILARITY_LOSSES["cross_entropy"] is cross_entropy


@pytest.mark.parametrize("fn", [negative_cosine, cross_entropy])
def test_bf16_inputs_give_float32_loss(fn):
    p, z = random_pair((8, 16), 6, torch.float32)
    p_bf, z_bf = p.detach().bfloat16(), z.detach().bfloat16()
    loss = fn(p_bf, z_bf)
    assert loss.dtype == torch.float32
    # Computed in float32 from the bf16 values, not in bf16 (which would be ~1e-2 off).
    expected = fn(p_bf.float(), z_bf.float())
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
