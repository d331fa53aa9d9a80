"""SwAV's Sinkhorn codes and swapped prediction loss against independent references.

Oracles: Algorithm 1 of the paper (arXiv:2006.09882, Appendix A.1) and Eq. 1-3 written out here,
and lightly's ``sinkhorn`` / ``SwaVLoss`` (test-only dependency). Lightly agrees with the paper on
everything tested here. Where its code differs in form it is equivalent: its row step omits the
``/ K`` of Algorithm 1 (a global factor that the next column normalisation cancels), and it
appends the queue's scores after the batch's instead of before (Sinkhorn treats columns alike).
Its default ``sinkhorn_gather_distributed=False`` computes codes per process under DDP, unlike the
paper's distributed Sinkhorn; siamkit always sums over processes (checked by the DDP test).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import SwaVLoss
from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn

from siamkit.losses import sinkhorn, swapped_prediction
from tests.ddp import run_ddp
from tests.losses.conftest import assert_all_close, value_and_grads


def _scores(batch: int, k: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Cosines of random unit embeddings with random unit prototypes, as SwAV computes them."""
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(batch, 16, generator=g, dtype=torch.float64), dim=1)
    c = F.normalize(torch.randn(k, 16, generator=g, dtype=torch.float64), dim=1)
    return (z @ c.t()).to(dtype)


def _crops(n: int, batch: int, k: int, seed: int) -> list[torch.Tensor]:
    return [_scores(batch, k, seed + 10 * v).requires_grad_() for v in range(n)]


def _algorithm_1(scores: torch.Tensor, eps: float = 0.05, niters: int = 3) -> torch.Tensor:
    """The paper's pseudo-code (Appendix A.1, Alg. 1) with its u, r, c vectors, in float64."""
    q = torch.exp(scores.double() / eps).t()
    q = q / q.sum()
    k, b = q.shape
    r, c = torch.ones(k, dtype=q.dtype) / k, torch.ones(b, dtype=q.dtype) / b
    for _ in range(niters):
        u = q.sum(dim=1)
        q = q * (r / u).unsqueeze(1)
        q = q * (c / q.sum(dim=0)).unsqueeze(0)
    return (q / q.sum(dim=0, keepdim=True)).t()


def _cross_entropy_eq2(z_scores: torch.Tensor, q: torch.Tensor, tau: float) -> torch.Tensor:
    """l(z_t, q_s) = -sum_k q_s^(k) log p_t^(k), p_t = exp(z^T c_k / tau) / sum_k' ... [Eq. 2],
    averaged over the batch (the 1/N of Eq. 3), softmax written out."""
    logits = z_scores / tau
    log_p = logits - torch.log(torch.exp(logits).sum(dim=1, keepdim=True))
    return -(q * log_p).sum(dim=1).mean()


def _paper_loss(scores: list[torch.Tensor], codes: list[torch.Tensor], tau: float = 0.1):
    """Sec. 3.2: sum over code crops i and other crops v != i of l(z_v, q_i), normalised by the
    number of pairs (Algorithm 1's -0.5 * mean(...) for two crops)."""
    pairs = [(i, v) for i in range(len(codes)) for v in range(len(scores)) if v != i]
    return sum(_cross_entropy_eq2(scores[v], codes[i], tau) for i, v in pairs) / len(pairs)


# --------------------------------------------------------------------------------------------
# Sinkhorn
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("batch", "k"), [(8, 5), (32, 16), (64, 300)])
@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_sinkhorn_matches_algorithm_1(batch, k, iterations):
    s = _scores(batch, k, 0)
    torch.testing.assert_close(
        sinkhorn(s, 0.05, iterations).double(),
        _algorithm_1(s, 0.05, iterations),
        rtol=1e-4,
        atol=1e-6,
    )


@pytest.mark.parametrize(("batch", "k"), [(8, 5), (32, 16), (64, 300)])
def test_sinkhorn_matches_lightly(batch, k):
    s = _scores(batch, k, 1)
    torch.testing.assert_close(
        sinkhorn(s), lightly_sinkhorn(s, iterations=3, epsilon=0.05), rtol=1e-4, atol=1e-7
    )


def test_sinkhorn_marginals():
    batch, k = 64, 16
    s = _scores(batch, k, 2)
    q = sinkhorn(s)
    assert q.shape == (batch, k) and q.dtype == torch.float32 and (q >= 0).all()
    # Rows (one sample's code) sum to 1 after the final rescale [Alg. 1].
    torch.testing.assert_close(q.sum(dim=1), torch.ones(batch))
    # Columns: each prototype gets B/K of the batch in the limit (the transportation polytope
    # of Sec. 3.1) ...
    uniform = torch.full((k,), batch / k)
    q_converged = sinkhorn(s, iterations=500)
    torch.testing.assert_close(q_converged.sum(dim=0), uniform, rtol=1e-4, atol=0)
    # ... approximately after the paper's 3 iterations (within 50% here, where a plain softmax
    # gives some prototype 1.7x its share), and within 5% after 10.
    assert ((q.sum(dim=0) / uniform - 1).abs() < 0.5).all()
    softmax_share = F.softmax(s / 0.05, dim=1).sum(dim=0) / uniform
    assert (softmax_share - 1).abs().max() > 0.7
    assert ((sinkhorn(s, iterations=10).sum(dim=0) / uniform - 1).abs() < 0.05).all()


def test_sinkhorn_is_a_diagonal_scaling_of_exp_scores_over_epsilon():
    # Q = Diag(u) exp(C^T Z / eps) Diag(v) [Sec. 3.1]: log Q - S / eps = a_b + b_k exactly.
    s = _scores(16, 6, 3, torch.float64)
    for eps in (0.05, 0.2):
        resid = torch.log(sinkhorn(s, eps).double()) - s / eps  # (B, K)
        a = resid[:, :1]
        b = resid[:1, :] - resid[0, 0]
        torch.testing.assert_close(resid, a + b, rtol=0, atol=1e-4)


def test_sinkhorn_is_permutation_equivariant_and_shift_invariant():
    s = _scores(24, 7, 4)
    q = sinkhorn(s)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sinkhorn(s[perm]), q[perm])
    # A constant added to every score is a global factor of exp(S / eps): no change.
    torch.testing.assert_close(sinkhorn(s - 0.5), q, rtol=1e-4, atol=1e-6)


def test_sinkhorn_has_no_gradient_and_is_float32():
    s = _scores(8, 4, 5).requires_grad_()
    q = sinkhorn(s)
    assert not q.requires_grad and q.grad_fn is None
    q_bf16 = sinkhorn(s.detach().bfloat16())
    assert q_bf16.dtype == torch.float32
    torch.testing.assert_close(q_bf16, sinkhorn(s.detach().bfloat16().float()))


# --------------------------------------------------------------------------------------------
# Swapped prediction loss
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n_crops", "batch", "k"), [(2, 8, 5), (4, 16, 12), (8, 32, 30)])
def test_swapped_prediction_matches_lightly_value_and_gradient(n_crops, batch, k):
    scores = _crops(n_crops, batch, k, 0)
    codes = [sinkhorn(s) for s in scores[:2]]
    mine = value_and_grads(lambda *s: swapped_prediction(list(s), codes, 0.1), *scores)
    lightly = SwaVLoss(temperature=0.1)
    oracle = value_and_grads(lambda *s: lightly(list(s[:2]), list(s[2:])), *scores)
    assert_all_close(mine, oracle, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("n_crops", "n_codes"), [(2, 2), (2, 1), (5, 2), (6, 3)])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_swapped_prediction_matches_paper_formula(n_crops, n_codes, tau):
    scores = [s.detach().double().requires_grad_() for s in _crops(n_crops, 16, 10, 1)]
    codes = [_algorithm_1(s.detach()) for s in scores[:n_codes]]
    mine = value_and_grads(lambda *s: swapped_prediction(list(s), codes, tau), *scores)
    ref = value_and_grads(lambda *s: _paper_loss(list(s), codes, tau), *scores)
    assert_all_close(mine, ref, rtol=1e-5, atol=1e-6)


def test_two_crop_loss_is_half_of_eq_1():
    # L(z_t, z_s) = l(z_t, q_s) + l(z_s, q_t) [Eq. 1]; Alg. 1 takes 0.5 of it.
    s_t, s_s = _crops(2, 8, 6, 2)
    q_t, q_s = sinkhorn(s_t), sinkhorn(s_s)
    eq1 = _cross_entropy_eq2(s_t, q_s, 0.1) + _cross_entropy_eq2(s_s, q_t, 0.1)
    torch.testing.assert_close(swapped_prediction([s_t, s_s], [q_t, q_s]), 0.5 * eq1)


def test_swapped_prediction_is_swapped():
    # Crop i's own scores never predict its own code: changing them only through q_i's
    # predictor set leaves the loss unchanged when there is a single code.
    s = _crops(3, 8, 6, 3)
    q0 = sinkhorn(s[0])
    base = swapped_prediction(s, [q0])
    torch.testing.assert_close(swapped_prediction([torch.randn(8, 6), s[1], s[2]], [q0]), base)
    (g0,) = torch.autograd.grad(base, [s[0]], allow_unused=True)
    assert g0 is None or not g0.any()


def test_loss_bounds():
    # Cross-entropy >= entropy of the code; equality when the prediction equals the code.
    q = F.one_hot(torch.arange(8) % 4, 4).float()
    confident = 100.0 * (q - 0.5)  # scores whose softmax at tau 0.1 is (almost) q
    assert swapped_prediction([confident, confident], [q, q]).item() < 1e-6
    soft = sinkhorn(_scores(8, 4, 6))
    wrong = _scores(8, 4, 7)
    entropy = -(soft * soft.clamp_min(1e-12).log()).sum(1).mean()
    assert swapped_prediction([wrong, wrong], [soft, soft]) >= entropy


def test_bf16_scores_give_float32_loss():
    s = [x.detach() for x in _crops(3, 8, 6, 8)]
    codes = [sinkhorn(x) for x in s[:2]]
    loss = swapped_prediction([x.bfloat16() for x in s], codes)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, swapped_prediction([x.bfloat16().float() for x in s], codes))


def test_invalid_crop_lists_raise():
    s = _crops(2, 4, 3, 9)
    with pytest.raises(ValueError):
        swapped_prediction(s[:1], [sinkhorn(s[0])])
    with pytest.raises(ValueError):
        swapped_prediction(s, [])
    with pytest.raises(ValueError):
        swapped_prediction(s, [sinkhorn(x) for x in s + s])


# --------------------------------------------------------------------------------------------
# DDP: 2 processes equal 1 process on the whole batch
# --------------------------------------------------------------------------------------------
def _ddp_codes_and_loss(full: list[torch.Tensor], queue: torch.Tensor) -> dict:
    from siamkit import distributed

    n = full[0].shape[0] // distributed.world_size()
    rows = slice(distributed.rank() * n, (distributed.rank() + 1) * n)
    local = [s[rows].clone().requires_grad_() for s in full]
    codes = [sinkhorn(s) for s in local[:2]]
    loss = swapped_prediction(local, codes)
    loss.backward()
    # With a queue: this process's share of it prepended, only the batch's codes kept.
    m = queue.shape[0] // distributed.world_size()
    q_rows = slice(distributed.rank() * m, (distributed.rank() + 1) * m)
    with_queue = sinkhorn(torch.cat([queue[q_rows], full[0][rows]]))[-n:]
    return {
        "codes": codes,
        "loss": loss.detach(),
        "grads": [s.grad for s in local],
        "with_queue": with_queue,
    }


def test_two_processes_equal_one_process_on_the_whole_batch():
    full = [_scores(16, 12, 20 + v) for v in range(4)]  # 2 global + 2 small crops
    queue = _scores(24, 12, 40)
    out = run_ddp(_ddp_codes_and_loss, 2, full, queue)

    one = [s.clone().requires_grad_() for s in full]
    codes = [sinkhorn(s) for s in one[:2]]
    loss = swapped_prediction(one, codes)
    loss.backward()
    # The queue+batch of one process, in any column order (here: whole queue first).
    with_queue = sinkhorn(torch.cat([queue, full[0]]))[-16:]
    for r, res in enumerate(out):
        rows = slice(8 * r, 8 * (r + 1))
        for got, want in zip(res["codes"], codes, strict=True):
            torch.testing.assert_close(got, want[rows], rtol=1e-5, atol=1e-7)
        # DDP averages parameter gradients over processes: each shard's gradient / 2.
        for got, want in zip(res["grads"], one, strict=True):
            assert want.grad is not None
            torch.testing.assert_close(got / 2, want.grad[rows], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(res["with_queue"], with_queue[rows], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close((out[0]["loss"] + out[1]["loss"]) / 2, loss.detach())
    # A per-process Sinkhorn (lightly's default) would give different codes.
    assert not torch.allclose(sinkhorn(full[0][:8]), codes[0][:8], atol=1e-4)
