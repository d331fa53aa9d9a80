"""BYOL's normalised MSE against independent references, in value and gradient.

Oracles: BYOL's Eq. 2 written out here (arXiv:2006.07733, Sec. 3.1: the squared distance of the
l2-normalised vectors), and lightly's ``NegativeCosineSimilarity`` through ``2 - 2 cos``. lightly
has no BYOL loss of its own; its BYOL example trains on ``0.5 * (D(p1, z2) + D(p2, z1))`` with
``D = -cos``, a quarter of the paper's gradient (the paper sums 2 - 2 cos over both directions),
so only the per-pair identity is checked against it.
"""

from __future__ import annotations

import pytest
import torch
from lightly.loss import NegativeCosineSimilarity

from siamkit.losses import negative_cosine, normalized_mse
from tests.losses.conftest import assert_all_close, random_pair, value_and_grads

SHAPES = [(1, 3), (8, 16), (32, 64)]


def _eq2(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """mean_i || p_i/||p_i|| - z_i/||z_i|| ||^2, Eq. 2 of BYOL, without any cosine."""
    p_unit = p / torch.sqrt((p * p).sum(dim=1, keepdim=True))
    z_unit = z / torch.sqrt((z * z).sum(dim=1, keepdim=True))
    return ((p_unit - z_unit) ** 2).sum(dim=1).mean()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_normalized_mse_matches_eq2_value_and_gradient(shape, seed):
    p, z = random_pair(shape, seed)
    mine = value_and_grads(normalized_mse, p, z)
    ref = value_and_grads(_eq2, p, z)
    # siamkit computes in float32 whatever the input dtype
    assert_all_close(mine, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_normalized_mse_is_two_minus_two_cosine_of_lightly(shape):
    p, z = random_pair(shape, 3, torch.float32)
    mine = value_and_grads(normalized_mse, p, z)
    lightly_cos = NegativeCosineSimilarity()
    oracle = value_and_grads(lambda a, b: 2 + 2 * lightly_cos(a, b), p, z)
    assert_all_close(mine, oracle, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(normalized_mse(p, z), 2 + 2 * negative_cosine(p, z))


def test_normalized_mse_range_and_extremes():
    """Pairs at known angles give known values: ``2 - 2 cos`` per pair, averaged.

    Rows at 0, 60, 90 and 120 degrees from their targets (each row scaled on its own, in a
    random orientation) lose 0, 1, 2 and 3: the mean is exactly 1.5. Each row counts once (the
    mean over 4 rows), whatever its scale (each is normalised on its own); opposite rows lose 4.
    """
    g = torch.Generator().manual_seed(4)
    basis, _ = torch.linalg.qr(torch.randn(8, 2, generator=g, dtype=torch.float64))  # (8, 2)
    angles = torch.tensor([0.0, 60.0, 90.0, 120.0], dtype=torch.float64) * torch.pi / 180
    in_plane = torch.stack([angles.cos(), angles.sin()], dim=1)  # (4, 2) unit, at those angles
    scales = torch.tensor([[0.1], [3.0], [1.0], [50.0]], dtype=torch.float64)
    p = scales * (in_plane @ basis.T)  # (4, 8)
    z = (torch.tensor([[2.0, 0.0]], dtype=torch.float64) @ basis.T).expand(4, 8)  # angle 0
    torch.testing.assert_close(normalized_mse(p, z), torch.tensor(1.5), atol=1e-6, rtol=0)
    for i, per_pair in enumerate([0.0, 1.0, 2.0, 3.0]):
        value = normalized_mse(p[i : i + 1], z[i : i + 1])
        torch.testing.assert_close(value, torch.tensor(per_pair), atol=1e-6, rtol=0)
    p, z = random_pair((16, 8), 4)
    # aligned pairs (any positive scale): 0; opposite pairs: 4
    torch.testing.assert_close(normalized_mse(p, 3.0 * p), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(normalized_mse(p, -p), torch.tensor(4.0), atol=1e-6, rtol=0)


def test_normalized_mse_is_scale_invariant_and_symmetric():
    p, z = random_pair((8, 16), 5)
    torch.testing.assert_close(normalized_mse(p, z), normalized_mse(0.1 * p, 7.0 * z))
    torch.testing.assert_close(normalized_mse(p, z), normalized_mse(z, p))


def test_normalized_mse_is_float32_under_bf16_input():
    p, z = random_pair((8, 16), 6, torch.bfloat16)
    out = normalized_mse(p, z)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, normalized_mse(p.float(), z.float()))
