"""Contrastive losses against independent references, in value and gradient, and under DDP.

Oracles: lightly's ``NTXentLoss`` with ``memory_bank_size=0`` (it follows SimCLR's Eq. 1: every
one of the 2N views is an anchor with 1 positive and 2N-2 negatives, the mean over 2N anchors),
and the papers' equations written out here with explicit loops (SimCLR arXiv:2002.05709 Eq. 1;
MoCo arXiv:1911.05722 Eq. 1; MoCo v3 arXiv:2104.02057 Alg. 1).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss

from siamkit import distributed
from siamkit.losses import ctr, info_nce, nt_xent
from siamkit.similarity import cosine_matrix, dot_temperature
from tests.ddp import run_ddp


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a.double(), b.double(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# References written from the equations
# --------------------------------------------------------------------------------------------
def _sim(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * v).sum() / (u.norm() * v.norm())


def _nt_xent_reference(z_a: torch.Tensor, z_b: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR Eq. 1 over the 2N views z_1..z_2N, loss = (1/2N) sum_k l(2k-1, 2k) + l(2k, 2k-1)."""
    z = torch.cat([z_a, z_b])
    n = z_a.shape[0]
    total = z.new_zeros(())
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denominator = sum(torch.exp(_sim(z[i], z[k]) / tau) for k in range(2 * n) if k != i)
        total = total - torch.log(torch.exp(_sim(z[i], z[j]) / tau) / denominator)
    return total / (2 * n)


def _info_nce_reference(q, k, negatives, tau: float) -> torch.Tensor:
    """MoCo Eq. 1 per query, averaged."""
    total = q.new_zeros(())
    for i in range(q.shape[0]):
        pos = torch.exp(_sim(q[i], k[i]) / tau)
        neg = sum(torch.exp(_sim(q[i], kn) / tau) for kn in negatives)
        total = total - torch.log(pos / (pos + neg))
    return total / q.shape[0]


def _ctr_reference(q, k, tau: float) -> torch.Tensor:
    """MoCo v3 Alg. 1: 2 tau * CE(q k^T / tau, diagonal), q and k normalised, k a constant."""
    k = k.detach()
    total = q.new_zeros(())
    for i in range(q.shape[0]):
        logits = torch.stack([_sim(q[i], kj) / tau for kj in k])
        total = total - (logits[i] - torch.logsumexp(logits, 0))
    return 2 * tau * total / q.shape[0]


# --------------------------------------------------------------------------------------------
# Pairwise similarities
# --------------------------------------------------------------------------------------------
def test_cosine_matrix_is_every_pair_and_float32():
    a, b = _randn(5, 7, seed=0).detach(), _randn(3, 7, seed=1).detach()
    sim = cosine_matrix(a, b)
    assert sim.shape == (5, 3) and sim.dtype == torch.float32
    expected = F.cosine_similarity(a[:, None, :], b[None, :, :], dim=2)
    _close(sim, expected)
    # invariant to a positive scale per row
    _close(cosine_matrix(3.0 * a, 0.1 * b), sim)


def test_dot_temperature_is_scaled_dot_product():
    a, b = _randn(4, 6, seed=2).detach(), _randn(9, 6, seed=3).detach()
    logits = dot_temperature(a, b, 0.2)
    assert logits.shape == (4, 9)
    _close(logits, a @ b.t() / 0.2)


# --------------------------------------------------------------------------------------------
# NT-Xent
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,d", [(2, 3), (8, 16), (16, 32)])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_matches_lightly_value_and_gradient(n, d, tau):
    z_a, z_b = (
        _randn(n, d, seed=n, dtype=torch.float32),
        _randn(n, d, seed=n + 1, dtype=torch.float32),
    )
    mine = nt_xent(z_a, z_b, tau)
    theirs = NTXentLoss(temperature=tau, memory_bank_size=0)(z_a, z_b)
    _close(mine, theirs)
    for g1, g2 in zip(
        torch.autograd.grad(mine, [z_a, z_b]), torch.autograd.grad(theirs, [z_a, z_b]), strict=True
    ):
        _close(g1, g2)


@pytest.mark.parametrize("tau", [0.07, 0.5, 1.0])
def test_nt_xent_matches_paper_equation_value_and_gradient(tau):
    z_a, z_b = _randn(6, 5, seed=10), _randn(6, 5, seed=11)
    mine, ref = nt_xent(z_a, z_b, tau), _nt_xent_reference(z_a, z_b, tau)
    _close(mine, ref)
    for g1, g2 in zip(
        torch.autograd.grad(mine, [z_a, z_b]), torch.autograd.grad(ref, [z_a, z_b]), strict=True
    ):
        _close(g1, g2)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_known_value_and_temperature_scaling(tau):
    # Two views identical, all images orthogonal: sim(pos) = 1, the 2N-2 negatives have sim 0,
    # so l = -log(e^{1/tau} / (e^{1/tau} + 2N - 2)) for every anchor.
    n = 4
    z = torch.eye(n, 8)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * n - 2))
    assert nt_xent(z, 5.0 * z, tau).item() == pytest.approx(expected, rel=1e-3, abs=1e-6)


def test_nt_xent_is_symmetric_in_the_views_and_the_order_of_images():
    z_a, z_b = _randn(8, 16, seed=20), _randn(8, 16, seed=21)
    _close(nt_xent(z_a, z_b, 0.5), nt_xent(z_b, z_a, 0.5))
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    _close(nt_xent(z_a[perm], z_b[perm], 0.5), nt_xent(z_a, z_b, 0.5))


def test_nt_xent_bf16_in_float32_out_and_shape_check():
    z_a, z_b = (
        _randn(8, 16, seed=22, dtype=torch.bfloat16),
        _randn(8, 16, seed=23, dtype=torch.bfloat16),
    )
    loss = nt_xent(z_a, z_b, 0.5)
    assert loss.dtype == torch.float32 and loss.shape == ()
    _close(loss, nt_xent(z_a.float(), z_b.float(), 0.5))
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(z_a, z_b[:4], 0.5)


# --------------------------------------------------------------------------------------------
# MoCo InfoNCE (queue)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [0.07, 0.2])
def test_info_nce_matches_paper_equation_value_and_gradient(tau):
    q, k, negatives = _randn(5, 8, seed=30), _randn(5, 8, seed=31), _randn(12, 8, seed=32)
    mine, ref = info_nce(q, k, negatives, tau), _info_nce_reference(q, k, negatives, tau)
    _close(mine, ref)
    for g1, g2 in zip(
        torch.autograd.grad(mine, [q, k, negatives]),
        torch.autograd.grad(ref, [q, k, negatives]),
        strict=True,
    ):
        _close(g1, g2)


def test_info_nce_known_value_positive_at_index_zero():
    # q = k, negatives orthogonal to q: l = -log(e^{1/tau} / (e^{1/tau} + K)).
    tau, n_neg = 0.2, 10
    q = torch.eye(3, 16)
    negatives = torch.eye(16)[3 : 3 + n_neg]
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + n_neg))
    assert info_nce(q, 2.0 * q, negatives, tau).item() == pytest.approx(expected, rel=1e-5)
    # Swapping which key is the positive changes the loss: index 0 is the positive.
    assert info_nce(q, negatives[:3], q, tau).item() > expected


# --------------------------------------------------------------------------------------------
# MoCo v3 ctr
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_ctr_matches_paper_pseudocode_value_and_gradient(tau):
    q, k = _randn(6, 8, seed=40), _randn(6, 8, seed=41)
    mine, ref = ctr(q, k, tau), _ctr_reference(q, k, tau)
    _close(mine, ref)
    _close(torch.autograd.grad(mine, q)[0], torch.autograd.grad(ref, q)[0])


def test_ctr_keys_get_no_gradient_and_the_2tau_factor():
    q, k = _randn(4, 8, seed=42), _randn(4, 8, seed=43)
    (gk,) = torch.autograd.grad(ctr(q, k, 0.2), k, allow_unused=True)
    assert gk is None or not gk.any()
    # q = k orthonormal: CE = -log(e^{1/tau} / (e^{1/tau} + N - 1)), times 2 tau.
    tau, n = 0.2, 4
    z = torch.eye(n, 8)
    ce = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + n - 1))
    assert ctr(z, z, tau).item() == pytest.approx(2 * tau * ce, rel=1e-5)


# --------------------------------------------------------------------------------------------
# DDP: 2 processes on halves == 1 process on the whole batch
# --------------------------------------------------------------------------------------------
def _losses_on_shard(full_a, full_b, full_q, full_k) -> dict[str, torch.Tensor]:
    r, w = distributed.rank(), distributed.world_size()
    n = full_a.shape[0] // w
    own = slice(r * n, (r + 1) * n)
    z_a = full_a[own].clone().requires_grad_()
    z_b = full_b[own].clone().requires_grad_()
    q = full_q[own].clone().requires_grad_()
    k = full_k[own].clone()
    out: dict[str, torch.Tensor] = {}
    loss = nt_xent(z_a, z_b, 0.5)
    out["nt_xent"] = loss.detach()
    out["grad_a"], out["grad_b"] = torch.autograd.grad(loss, [z_a, z_b])
    loss = ctr(q, k, 0.2)
    out["ctr"] = loss.detach()
    (out["grad_q"],) = torch.autograd.grad(loss, q)
    return out


def test_two_processes_give_the_loss_and_gradient_of_one_process_on_the_whole_batch():
    g = torch.Generator().manual_seed(50)
    full_a, full_b, full_q, full_k = (torch.randn(8, 6, generator=g) for _ in range(4))
    out = run_ddp(_losses_on_shard, 2, full_a, full_b, full_q, full_k)

    a, b, q = (x.clone().requires_grad_() for x in (full_a, full_b, full_q))
    one_nt = nt_xent(a, b, 0.5)
    grad_a, grad_b = torch.autograd.grad(one_nt, [a, b])
    one_ctr = ctr(q, full_k, 0.2)
    (grad_q,) = torch.autograd.grad(one_ctr, q)

    # DDP averages the processes' gradients: each shard's gradient / 2 is the one-process one.
    for r, res in enumerate(out):
        own = slice(4 * r, 4 * r + 4)
        _close(res["grad_a"] / 2, grad_a[own])
        _close(res["grad_b"] / 2, grad_b[own])
        _close(res["grad_q"] / 2, grad_q[own])
    _close((out[0]["nt_xent"] + out[1]["nt_xent"]) / 2, one_nt)
    _close((out[0]["ctr"] + out[1]["ctr"]) / 2, one_ctr)
    # Each anchor saw 2WN - 2 negatives: the per-process losses differ from the losses of the
    # shards alone (which would see only 2N - 2).
    alone = nt_xent(full_a[:4], full_b[:4], 0.5)
    assert not torch.allclose(out[0]["nt_xent"], alone)


def test_pairwise_similarities_stay_float32_exact_under_bf16_autocast():
    """Under bf16 autocast a float32 matmul would silently run in bf16 (3 digits)."""
    torch.manual_seed(0)
    a, b = torch.randn(16, 64), torch.randn(12, 64)
    exact_cos, exact_dot = cosine_matrix(a, b), dot_temperature(a, b, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(cosine_matrix(a, b), exact_cos, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(dot_temperature(a, b, 0.1), exact_dot, rtol=1e-6, atol=1e-5)
