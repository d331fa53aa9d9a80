"""Information-maximisation losses (Barlow Twins, VICReg, W-MSE) against independent references.

Oracles: lightly's ``BarlowTwinsLoss``, ``VICRegLoss`` and ``WMSELoss`` (test-only dependency) and
the papers' equations written out here: Barlow Twins arXiv:2103.03230 Eq. 1-2, VICReg
arXiv:2105.04906 Eq. 1-6, W-MSE arXiv:2007.06346 Eq. 4-6.

VICReg's variance term: the authors' code (facebookresearch/vicreg, main_vicreg.py) averages the
two branches, ``std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2``,
and the published coefficients 25/25/1 were tuned with it; Eq. 6 prints the sum ``v(Z) + v(Z')``.
Our default is the code's mean (``variance_reduction="mean"``), equal to lightly's ``VICRegLoss``,
which follows the authors' code there; the printed sum (``"sum"``) equals lightly with ``mu``
doubled. Both are also checked against the equations written out here.

Where lightly deviates from the paper or the authors' code, they win:
- VICReg under DDP: lightly gathers only with ``gather_distributed=True`` (default off); the
  authors' code always computes the variance and covariance on the gathered global batch, as ours
  does (``test_gathering_losses_in_two_processes_equal_one_process``). On one process, as in the
  tests against lightly here, the two agree.
- Barlow Twins under DDP: lightly averages the per-process cross-correlation matrices, each
  standardised with its own process's statistics; Eq. 2 is the correlation over the whole batch
  (the authors' code gets it with SyncBatchNorm + all-reduce). Ours equals one process on the
  whole batch; lightly's does not (``test_gathering_losses_in_two_processes_equal_one_process``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch
from lightly.loss import BarlowTwinsLoss, VICRegLoss, WMSELoss
from lightly.loss.vicreg_loss import covariance_loss, invariance_loss, variance_loss

from siamkit import distributed
from siamkit.heads import whiten
from siamkit.losses import barlow_twins, vicreg, vicreg_terms, wmse
from siamkit.losses.information import off_diagonal
from siamkit.similarity import covariance, cross_correlation
from tests.ddp import run_ddp
from tests.losses.conftest import assert_all_close, shifted_randn, value_and_grads

SHAPES = [(8, 4), (32, 16), (64, 48)]


# --------------------------------------------------------------------------------------------
# Similarities: cross-correlation and covariance
# --------------------------------------------------------------------------------------------
def _eq2_cross_correlation(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """Barlow Twins Eq. 2 with mean-centred dimensions, written with sums."""
    a = z_a - z_a.mean(0)
    b = z_b - z_b.mean(0)
    num = torch.einsum("bi,bj->ij", a, b)
    return num / torch.outer(a.pow(2).sum(0).sqrt(), b.pow(2).sum(0).sqrt())


def test_cross_correlation_is_eq2_and_pearson_correlation():
    z_a, z_b = (
        shifted_randn(32, 6, seed=0, dtype=torch.float64),
        shifted_randn(32, 6, seed=1, dtype=torch.float64),
    )
    c = cross_correlation(z_a, z_b, eps=0.0)
    assert c.shape == (6, 6) and c.dtype == torch.float32
    torch.testing.assert_close(c.double(), _eq2_cross_correlation(z_a, z_b), rtol=1e-5, atol=1e-6)
    pearson = torch.corrcoef(torch.cat([z_a, z_b], 1).T)[:6, 6:]
    torch.testing.assert_close(c.double(), pearson.detach(), rtol=1e-5, atol=1e-6)
    # scale and shift of a dimension change nothing; values lie in [-1, 1]
    torch.testing.assert_close(cross_correlation(3 * z_a - 7, z_b, eps=0.0), c)
    assert c.abs().max() <= 1 + 1e-6


def test_covariance_is_unbiased_sample_covariance():
    z = shifted_randn(20, 5, seed=2, dtype=torch.float64)
    cov = covariance(z)
    assert cov.shape == (5, 5) and cov.dtype == torch.float32
    torch.testing.assert_close(cov.double(), torch.cov(z.T).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        torch.diagonal(cov).double(), z.var(0).detach(), rtol=1e-5, atol=1e-6
    )


def test_off_diagonal_takes_every_off_diagonal_entry_once():
    m = torch.arange(25.0).view(5, 5)
    off = off_diagonal(m)
    assert off.numel() == 20
    assert sorted(off.flatten().tolist()) == sorted(m[~torch.eye(5, dtype=torch.bool)].tolist())


# --------------------------------------------------------------------------------------------
# Barlow Twins
# --------------------------------------------------------------------------------------------
def _barlow_twins_paper(z_a: torch.Tensor, z_b: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq. 1: sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2, C from Eq. 2, with loops."""
    c = _eq2_cross_correlation(z_a, z_b)
    d = c.shape[0]
    on = torch.stack([(1 - c[i, i]) ** 2 for i in range(d)]).sum()
    off = torch.stack([c[i, j] ** 2 for i in range(d) for j in range(d) if i != j]).sum()
    return on + lam * off


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("lam", [5e-3, 0.5])
def test_barlow_twins_matches_lightly_value_and_gradient(shape, lam):
    z_a, z_b = shifted_randn(*shape, seed=3), shifted_randn(*shape, seed=4)
    mine = value_and_grads(lambda a, b: barlow_twins(a, b, lambda_offdiag=lam), z_a, z_b)
    oracle = value_and_grads(BarlowTwinsLoss(lambda_param=lam), z_a, z_b)
    assert_all_close(mine, oracle)


@pytest.mark.parametrize("shape", SHAPES[:2])
def test_barlow_twins_matches_paper_equations(shape):
    z_a, z_b = (
        shifted_randn(*shape, seed=5, dtype=torch.float64),
        shifted_randn(*shape, seed=6, dtype=torch.float64),
    )
    mine = value_and_grads(lambda a, b: barlow_twins(a, b, 5e-3, eps=0.0), z_a, z_b)
    ref = value_and_grads(lambda a, b: _barlow_twins_paper(a, b, 5e-3), z_a, z_b)
    assert_all_close(mine, ref)


def _decorrelated(n: int, d: int, seed: int) -> torch.Tensor:
    """Columns with zero mean, equal norm sqrt(n) and pairwise orthogonal: C = I exactly."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(0))
    return q * n**0.5


def test_barlow_twins_is_zero_for_identical_decorrelated_views():
    z = _decorrelated(64, 8, seed=7)
    assert barlow_twins(z, z.clone(), eps=0.0).item() == pytest.approx(0.0, abs=1e-9)
    # Any scale/shift per dimension is standardised away.
    assert barlow_twins(5 * z + 2, z, eps=0.0).item() == pytest.approx(0.0, abs=1e-9)
    # Correlated dimensions are penalised only through lambda; a flipped view through C_ii.
    assert barlow_twins(z, -z, eps=0.0).item() == pytest.approx(4.0 * 8, rel=1e-5)


def test_barlow_twins_terms_switch_off_for_the_table_5_ablations():
    z_a, z_b = shifted_randn(16, 6, seed=8), shifted_randn(16, 6, seed=9)
    full, only_invariance = barlow_twins(z_a, z_b, 5e-3), barlow_twins(z_a, z_b, 0.0)
    only_redundancy = barlow_twins(z_a, z_b, 5e-3, invariance_weight=0.0)
    torch.testing.assert_close(only_invariance + only_redundancy, full)
    z = _decorrelated(64, 8, seed=7)
    # A flipped view: C = -I, so only the invariance term (C_ii - 1)^2 = 4 per dimension counts.
    assert barlow_twins(z, -z, 5e-3, eps=0.0, invariance_weight=0.0).item() == pytest.approx(
        0.0, abs=1e-9
    )
    assert barlow_twins(z, -z, 0.0, eps=0.0).item() == pytest.approx(4.0 * 8, rel=1e-5)


def test_barlow_twins_is_symmetric_in_the_views():
    z_a, z_b = shifted_randn(16, 6, seed=8), shifted_randn(16, 6, seed=9)
    torch.testing.assert_close(barlow_twins(z_a, z_b), barlow_twins(z_b, z_a))


# --------------------------------------------------------------------------------------------
# VICReg
# --------------------------------------------------------------------------------------------
def _vicreg_reference(z_a, z_b, lam, mu, nu, gamma=1.0, eps=1e-4, variance_reduction="mean"):
    """Eq. 1-6 written out; the invariance term is the mean over n and d (Algorithm 1, the code).

    The variance terms of the two branches are averaged (``"mean"``, the authors' main_vicreg.py)
    or summed (``"sum"``, Eq. 6 as printed).
    """
    n, d = z_a.shape

    def v(z):  # Eq. 1: 1/d sum_j max(0, gamma - sqrt(Var(z^j) + eps)), unbiased variance
        var = ((z - z.mean(0)) ** 2).sum(0) / (n - 1)
        return torch.clamp(gamma - torch.sqrt(var + eps), min=0).sum() / d

    def c(z):  # Eq. 3-4: 1/d sum_{i != j} C(Z)_ij^2
        zc = z - z.mean(0)
        cov = sum(torch.outer(zc[i], zc[i]) for i in range(n)) / (n - 1)
        return (cov**2).sum() / d - (torch.diagonal(cov) ** 2).sum() / d

    s = ((z_a - z_b) ** 2).sum() / (n * d)
    variance = {"mean": (v(z_a) + v(z_b)) / 2, "sum": v(z_a) + v(z_b)}[variance_reduction]
    return lam * s + mu * variance + nu * (c(z_a) + c(z_b))


REDUCTIONS = ["mean", "sum"]


@pytest.mark.parametrize("shape", SHAPES)
def test_vicreg_default_matches_lightly_and_the_sum_matches_it_with_mu_doubled(shape):
    # lightly, like the authors' code, averages the two variance terms: our default.
    # std < 1: hinge active
    z_a, z_b = shifted_randn(*shape, seed=10) * 0.3, shifted_randn(*shape, seed=11) * 0.3
    lightly_25 = VICRegLoss(lambda_param=25.0, mu_param=25.0, nu_param=1.0)
    mean = value_and_grads(vicreg, z_a, z_b)
    assert_all_close(mean, value_and_grads(lightly_25, z_a, z_b))
    # Eq. 6 as printed sums them: lightly with mu doubled.
    total = value_and_grads(lambda a, b: vicreg(a, b, variance_reduction="sum"), z_a, z_b)
    lightly_50 = VICRegLoss(lambda_param=25.0, mu_param=50.0, nu_param=1.0)
    assert_all_close(total, value_and_grads(lightly_50, z_a, z_b))
    assert not torch.allclose(mean[0], total[0])


@pytest.mark.parametrize("variance_reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_vicreg_terms_match_lightly_terms(shape, variance_reduction):
    z_a, z_b = shifted_randn(*shape, seed=12) * 0.3, shifted_randn(*shape, seed=13) * 0.3

    def pick(k):
        return lambda a, b: vicreg_terms(a, b, variance_reduction=variance_reduction)[k]

    scale = 0.5 if variance_reduction == "mean" else 1.0
    oracles = [
        lambda a, b: invariance_loss(a, b),
        lambda a, b: scale * (variance_loss(a) + variance_loss(b)),
        lambda a, b: covariance_loss(a) + covariance_loss(b),
    ]
    for k, oracle in enumerate(oracles):
        assert_all_close(value_and_grads(pick(k), z_a, z_b), value_and_grads(oracle, z_a, z_b))


@pytest.mark.parametrize("variance_reduction", REDUCTIONS)
@pytest.mark.parametrize("coeffs", [(25.0, 25.0, 1.0), (1.0, 0.0, 0.0), (0.0, 3.0, 0.5)])
def test_vicreg_matches_the_equations_in_value_and_gradient(coeffs, variance_reduction):
    z_a = shifted_randn(16, 8, seed=14, dtype=torch.float64) * 0.4
    z_b = shifted_randn(16, 8, seed=15, dtype=torch.float64) * 0.4
    how = {"variance_reduction": variance_reduction}
    mine = value_and_grads(lambda a, b: vicreg(a, b, *coeffs, **how), z_a, z_b)
    ref = value_and_grads(lambda a, b: _vicreg_reference(a, b, *coeffs, **how), z_a, z_b)
    assert_all_close(mine, ref)


def test_vicreg_default_is_the_authors_mean_and_the_sum_doubles_the_variance_term():
    z_a = shifted_randn(16, 8, seed=22, dtype=torch.float64) * 0.4
    z_b = shifted_randn(16, 8, seed=23, dtype=torch.float64) * 0.4
    torch.testing.assert_close(vicreg(z_a, z_b), vicreg(z_a, z_b, variance_reduction="mean"))
    mean = vicreg_terms(z_a, z_b)
    total = vicreg_terms(z_a, z_b, variance_reduction="sum")
    assert mean.variance.item() > 0
    torch.testing.assert_close(total.variance, 2 * mean.variance)
    torch.testing.assert_close(total.invariance, mean.invariance)
    torch.testing.assert_close(total.covariance, mean.covariance)
    with pytest.raises(ValueError, match="variance_reduction"):
        vicreg_terms(z_a, z_b, variance_reduction="max")  # type: ignore[arg-type]


@pytest.mark.parametrize("variance_reduction", REDUCTIONS)
def test_vicreg_gamma_and_eps_enter_the_variance_hinge(variance_reduction):
    z_a, z_b = (
        shifted_randn(16, 8, seed=16, dtype=torch.float64),
        shifted_randn(16, 8, seed=17, dtype=torch.float64),
    )
    how = {"variance_reduction": variance_reduction}
    for gamma, eps in [(2.0, 1e-4), (1.0, 0.5)]:
        mine = vicreg(z_a, z_b, gamma=gamma, eps=eps, **how)
        ref = _vicreg_reference(z_a, z_b, 25.0, 25.0, 1.0, gamma=gamma, eps=eps, **how)
        torch.testing.assert_close(mine.double(), ref.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variance_reduction", REDUCTIONS)
@pytest.mark.parametrize("coeffs", [(25.0, 25.0, 1.0), (0.0, 3.0, 0.5)])
def test_vicreg_returns_the_loss_and_its_unweighted_terms_in_one_pass(coeffs, variance_reduction):
    z_a = shifted_randn(16, 8, seed=20, dtype=torch.float64) * 0.4
    z_b = shifted_randn(16, 8, seed=21, dtype=torch.float64) * 0.4
    how = {"variance_reduction": variance_reduction}
    loss, terms = vicreg(z_a, z_b, *coeffs, return_terms=True, **how)
    torch.testing.assert_close(loss, vicreg(z_a, z_b, *coeffs, **how), rtol=0, atol=0)
    for got, expected in zip(terms, vicreg_terms(z_a, z_b, **how), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    lam, mu, nu = coeffs
    ref = _vicreg_reference(z_a, z_b, lam, mu, nu, **how)  # Eq. 1-6 written out
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    # The same graph: the gradient through the returned loss is the reference's.
    (g_mine,) = torch.autograd.grad(loss, [z_a], retain_graph=True)
    (g_ref,) = torch.autograd.grad(ref, [z_a])
    torch.testing.assert_close(g_mine.double(), g_ref, rtol=1e-4, atol=1e-6)


def test_vicreg_invariance_is_zero_for_identical_views_and_terms_switch_off():
    z = shifted_randn(32, 8, seed=18)
    t = vicreg_terms(z, z)
    assert t.invariance.item() == 0.0
    # With every coefficient but one at 0, the loss is that one weighted term.
    z_b = shifted_randn(32, 8, seed=19)
    t = vicreg_terms(z, z_b)
    torch.testing.assert_close(vicreg(z, z_b, 2.0, 0.0, 0.0), 2.0 * t.invariance)
    torch.testing.assert_close(vicreg(z, z_b, 0.0, 3.0, 0.0), 3.0 * t.variance)
    torch.testing.assert_close(vicreg(z, z_b, 0.0, 0.0, 4.0), 4.0 * t.covariance)
    # A switched-off term contributes no gradient: with only the invariance on, identical views
    # get zero gradient although their variance/covariance terms are not zero.
    z0 = z.detach().clone().requires_grad_()
    (g,) = torch.autograd.grad(vicreg(z0, z0, 25.0, 0.0, 0.0), [z0])
    assert not g.any()


def test_vicreg_variance_and_covariance_vanish_for_spread_decorrelated_views():
    z = _decorrelated(64, 8, seed=20) * 1.5  # std 1.5 * sqrt(n/(n-1)) > gamma = 1, C diagonal
    t = vicreg_terms(z, z)
    assert t.variance.item() == 0.0
    assert t.covariance.item() == pytest.approx(0.0, abs=1e-9)
    assert vicreg(z, z).item() == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------------------------
# W-MSE (its whitening step is tested in tests/heads/test_whitening.py)
# --------------------------------------------------------------------------------------------
def _wmse_paper(views, subsets, eps=0.0):
    """Eq. 6 over given sub-batches: mean over images and pairs of ||zhat_j - zhat_k||^2."""
    n = views[0].shape[0]
    pairs = list(itertools.combinations(range(len(views)), 2))
    total = 0.0
    for idx in subsets:
        white = []
        for v in views:
            x = v[idx]
            xc = x - x.mean(0)
            sigma = xc.T @ xc / (len(idx) - 1)
            ridge = eps * torch.diagonal(sigma).mean()
            sigma = sigma + ridge * torch.eye(x.shape[1], dtype=x.dtype)
            w = xc @ torch.linalg.inv(torch.linalg.cholesky(sigma)).T
            white.append(w / w.norm(dim=1, keepdim=True))
        for j, k in pairs:
            total = total + ((white[j] - white[k]) ** 2).sum()
    return total / (len(pairs) * n)


@pytest.mark.parametrize("num_positives", [2, 4])
@pytest.mark.parametrize("w_iter", [1, 3])
def test_wmse_matches_lightly_value_and_gradient(num_positives, w_iter):
    views = [shifted_randn(64, 8, seed=30 + i) for i in range(num_positives)]
    torch.manual_seed(0)  # both draw their permutations from the global RNG
    mine = value_and_grads(lambda *v: wmse(list(v), w_size=16, w_iter=w_iter, eps=0.0), *views)
    torch.manual_seed(0)
    oracle_fn = WMSELoss(
        embedding_dim=8, eps=0.0, track_running_stats=False, w_iter=w_iter, w_size=16,
        num_samples=num_positives,
    )  # fmt: skip
    oracle = value_and_grads(lambda *v: oracle_fn(torch.cat(v)), *views)
    assert_all_close(mine, oracle, rtol=1e-4, atol=1e-5)


def test_wmse_matches_paper_equations_with_its_sub_batches():
    views = [shifted_randn(48, 6, seed=40 + i, dtype=torch.float64) for i in range(3)]
    perm = torch.randperm(48, generator=torch.Generator().manual_seed(5))
    subsets = perm.tensor_split(3)  # w_size 16 -> 3 sub-batches
    mine = value_and_grads(
        lambda *v: wmse(list(v), w_size=16, eps=1e-3, generator=torch.Generator().manual_seed(5)),
        *views,
    )
    ref = value_and_grads(lambda *v: _wmse_paper(list(v), subsets, eps=1e-3), *views)
    assert_all_close(mine, ref, rtol=1e-4, atol=1e-5)


def test_wmse_of_many_positives_is_the_mean_over_pairs():
    views = [shifted_randn(64, 8, seed=50 + i) for i in range(4)]
    kw = {"w_size": 32, "w_iter": 2}
    full = wmse(views, generator=torch.Generator().manual_seed(1), **kw)
    pairs = [
        wmse([views[j], views[k]], generator=torch.Generator().manual_seed(1), **kw)
        for j, k in itertools.combinations(range(4), 2)
    ]
    assert len(pairs) == 6
    torch.testing.assert_close(full, torch.stack(pairs).mean())


def _regular_polygon(k: int, angle: float = 0.0) -> torch.Tensor:
    """``(k, 2)`` points evenly spaced on the unit circle, the first at ``angle`` (radians).

    For ``k >= 3`` their mean is 0 and their sample covariance exactly ``k / (2 (k - 1)) I``.
    """
    theta = angle + 2 * torch.pi * torch.arange(k, dtype=torch.float64) / k
    return torch.stack([theta.cos(), theta.sin()], dim=1)


def test_wmse_of_views_whose_whitened_versions_are_known():
    """Views built so that their whitened, l2-normalised rows are known, and so the loss.

    Eq. 6 is the mean over rows of ``||zhat_1 - zhat_2||^2 = 2 - 2 cos`` [arXiv:2007.06346]:
    - identical views: 0; opposite views: 4 (whitening is linear, they stay opposite);
    - a regular polygon and the same polygon turned by ``a`` (shifted, scaled): both have an
      isotropic covariance, so whitening only centres and rescales them, and every pair of rows
      stays at angle ``a``: exactly ``2 - 2 cos a`` (2 at 90 degrees, 1 at 60, 3 at 120);
    - ``z`` and ``z M + b`` with ``M`` upper triangular with a positive diagonal: the second
      view's covariance is ``M^T Sigma M``, whose Cholesky factor is ``M^T L``, so its whitened
      rows ``(z - mu) M (M^T L)^{-T} = (z - mu) L^{-T}`` equal the first's: 0, in every
      sub-batch. Centring without whitening, whitening with the other view's statistics, or a
      ZCA whitening would all leave a loss well above 0.
    """
    z = shifted_randn(64, 8, seed=60)
    assert wmse([z, z.clone()], w_size=32).item() == pytest.approx(0.0, abs=1e-6)
    loss = wmse([z, -z], w_size=32)  # whitening is linear: opposite views stay opposite
    assert loss.item() == pytest.approx(4.0, rel=1e-5)

    polygon = _regular_polygon(12, angle=0.3)
    for degrees, expected in ((90, 2.0), (60, 1.0), (120, 3.0)):
        turned = _regular_polygon(12, angle=0.3 + degrees * torch.pi / 180)
        views = [polygon.float() + torch.tensor([0.5, -1.0]), 5.0 * turned.float() - 2.0]
        # w_size >= the batch: the polygon is whitened whole, so its covariance is isotropic.
        assert wmse(views, w_size=12).item() == pytest.approx(expected, abs=1e-5), degrees

    g = torch.Generator().manual_seed(61)
    diagonal = torch.diag(1 + torch.rand(8, generator=g))  # > 0, so M^T L is a Cholesky factor
    upper = torch.triu(torch.randn(8, 8, generator=g), diagonal=1) + diagonal
    mixed = z.detach() @ upper + torch.randn(8, generator=g)  # anisotropic and correlated
    assert wmse([z, mixed], w_size=32).item() == pytest.approx(0.0, abs=1e-5)
    # The same mixing from the other side (lower triangular) is not undone by this whitening.
    assert wmse([z, z.detach() @ upper.T], w_size=32).item() > 0.1


def test_wmse_small_batch_is_whitened_whole_and_needs_two_views():
    views = [shifted_randn(12, 4, seed=62), shifted_randn(12, 4, seed=63)]
    whole = _wmse_paper([v.double() for v in views], [torch.arange(12)], eps=1e-4)
    torch.testing.assert_close(
        wmse(views, w_size=128).double(), whole.detach(), rtol=1e-4, atol=1e-5
    )
    with pytest.raises(ValueError, match="two positives"):
        wmse(views[:1])


# --------------------------------------------------------------------------------------------
# Two processes vs one process on the whole batch
# --------------------------------------------------------------------------------------------
def _two_process_losses(full_a: torch.Tensor, full_b: torch.Tensor) -> dict[str, torch.Tensor]:
    r, w = distributed.rank(), distributed.world_size()
    n = full_a.shape[0] // w
    out: dict[str, torch.Tensor] = {}
    losses = {
        "barlow": lambda a, b: barlow_twins(a, b),
        "vicreg": lambda a, b: vicreg(a, b),
        # per-process sub-batches: w_size = this process's batch
        "wmse": lambda a, b: wmse([a, b], w_size=n, eps=1e-4),
    }
    for name, fn in losses.items():
        a = full_a[r * n : (r + 1) * n].clone().requires_grad_(True)
        b = full_b[r * n : (r + 1) * n].clone().requires_grad_(True)
        loss = fn(a, b)
        loss.backward()
        out[f"{name}_loss"], out[f"{name}_grad_a"], out[f"{name}_grad_b"] = (
            loss.detach(),
            a.grad,  # type: ignore[assignment]
            b.grad,  # type: ignore[assignment]
        )
    a = full_a[r * n : (r + 1) * n]
    b = full_b[r * n : (r + 1) * n]
    out["lightly_barlow_loss"] = BarlowTwinsLoss(gather_distributed=True)(a, b).detach()
    return out


def test_gathering_losses_in_two_processes_equal_one_process():
    full_a, full_b = (
        shifted_randn(32, 12, seed=70).detach() * 0.5,
        shifted_randn(32, 12, seed=71).detach() * 0.5,
    )
    out = run_ddp(_two_process_losses, 2, full_a, full_b)
    halves = [slice(0, 16), slice(16, 32)]
    references: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "barlow": barlow_twins,
        "vicreg": vicreg,
        # no gather: 2 processes = the mean of the per-process losses, each on its own half
        "wmse": lambda a, b: torch.stack(
            [wmse([a[h], b[h]], w_size=16, eps=1e-4) for h in halves]
        ).mean(),
    }
    for name, fn in references.items():
        one_a, one_b = full_a.clone().requires_grad_(), full_b.clone().requires_grad_()
        loss = fn(one_a, one_b)
        loss.backward()
        if name == "wmse":  # per-process values differ; DDP's mean of them is the reference
            torch.testing.assert_close((out[0][f"{name}_loss"] + out[1][f"{name}_loss"]) / 2, loss)
        for r, res in enumerate(out):
            if name != "wmse":  # the same global-batch value on every rank
                torch.testing.assert_close(res[f"{name}_loss"], loss.detach(), rtol=1e-5, atol=1e-6)
            # DDP averages over 2 processes: each process's gradient / 2 is the 1-process slice.
            for key, one in (("grad_a", one_a), ("grad_b", one_b)):
                assert one.grad is not None
                torch.testing.assert_close(
                    res[f"{name}_{key}"] / 2, one.grad[halves[r]], rtol=1e-4, atol=1e-6
                )
    # lightly's gathered Barlow Twins averages per-process correlation matrices: not Eq. 2 on the
    # whole batch.
    lightly_value = out[0]["lightly_barlow_loss"]
    assert not torch.allclose(lightly_value, barlow_twins(full_a, full_b), rtol=1e-3)


# --------------------------------------------------------------------------------------------
# bf16 autocast (training runs under it): everything stays float32
# --------------------------------------------------------------------------------------------
def test_statistics_and_losses_are_float32_under_bf16_autocast():
    """Under autocast a float32 matmul runs in bf16 unless autocast is turned off; a bf16
    covariance of 128 x 64 embeddings is indefinite often enough to break W-MSE's Cholesky."""
    z_a, z_b = shifted_randn(128, 64, seed=80).detach(), shifted_randn(128, 64, seed=81).detach()
    z_a = z_a @ shifted_randn(64, 64, seed=82).detach()  # correlated: ill-conditioned covariance
    fns = {
        "cross_correlation": lambda: cross_correlation(z_a, z_b),
        "covariance": lambda: covariance(z_a),
        "whiten": lambda: whiten(z_a),
        "barlow_twins": lambda: barlow_twins(z_a, z_b),
        "vicreg": lambda: vicreg(z_a, z_b),
        "wmse": lambda: wmse([z_a, z_b], w_size=128),
    }
    for name, fn in fns.items():
        exact = fn()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under_autocast = fn()
        assert under_autocast.dtype == torch.float32, name
        torch.testing.assert_close(under_autocast, exact, rtol=1e-5, atol=1e-5, msg=name)
