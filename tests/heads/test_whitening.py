"""Batch whitening (W-MSE's whitening step, arXiv:2007.06346, Eq. 4-5) against its definition:
zero mean and identity covariance, the ridge's effect, scale invariance, the inverse-Cholesky
formula in value and gradient, float32 out of bf16 in."""

from __future__ import annotations

import torch

from siamkit.heads import whiten
from tests.losses.conftest import assert_all_close, shifted_randn, value_and_grads


def test_whitened_batch_has_zero_mean_and_identity_covariance():
    # strongly correlated dimensions
    z = shifted_randn(256, 16, seed=21) @ shifted_randn(16, 16, seed=22)
    w = whiten(z, eps=0.0)
    assert w.shape == z.shape and w.dtype == torch.float32
    torch.testing.assert_close(w.mean(0), torch.zeros(16), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.cov(w.T), torch.eye(16), atol=1e-3, rtol=0)
    # With a ridge r = eps tr(Sigma)/D the covariance is I - r L^{-1} L^{-T} (L L^T = Sigma + r I),
    # whose eigenvalues are lambda / (lambda + r): identity up to r / lambda_min.
    eps = 1e-2
    cov_eps = torch.cov(whiten(z, eps=eps).T).double()
    sigma = torch.cov(z.T.double()).detach()
    r = eps * torch.diagonal(sigma).mean()
    eye = torch.eye(16, dtype=torch.float64)
    l_inv = torch.linalg.inv(torch.linalg.cholesky(sigma + r * eye))
    torch.testing.assert_close(cov_eps, eye - r * l_inv @ l_inv.T, atol=1e-3, rtol=0)
    lam = torch.linalg.eigvalsh(sigma)
    torch.testing.assert_close(
        torch.linalg.eigvalsh(cov_eps), (lam / (lam + r)).sort().values, atol=1e-3, rtol=0
    )


def test_default_ridge_still_whitens_a_direction_shrunk_ten_thousandfold():
    """Regression: with a ridge of 1e-4 of the mean variance (float32), a direction whose variance
    training had shrunk below the ridge came out near 0 instead of unit variance, so the loss no
    longer saw it and W-MSE collapsed on CIFAR-10. The default must whiten it."""
    z = shifted_randn(256, 16, seed=28).detach()
    z[:, 3] *= 1e-2  # variance 1e-4 of the others
    cov = torch.cov(whiten(z).T)
    torch.testing.assert_close(cov, torch.eye(16), atol=1e-3, rtol=0)
    old = torch.cov(whiten(z, eps=1e-4).T)  # the former default
    assert old[3, 3] < 0.6  # lambda / (lambda + r) = 1e-4 / (1e-4 + ~1e-4): about half


def test_whitening_and_its_ridge_do_not_depend_on_the_scale_of_z():
    z = shifted_randn(64, 8, seed=26).detach()
    for eps in (0.0, 1e-3):
        torch.testing.assert_close(whiten(1e3 * z, eps), whiten(z, eps), rtol=1e-4, atol=1e-4)
    # rank-deficient (fewer samples than dimensions) and large: the ridge keeps it defined
    w = whiten(1e4 * shifted_randn(12, 32, seed=27).detach(), eps=1e-4)
    assert torch.isfinite(w).all()


def test_whiten_matches_inverse_cholesky_formula_value_and_gradient():
    z = shifted_randn(40, 6, seed=23, dtype=torch.float64)
    weights = shifted_randn(40, 6, seed=24, dtype=torch.float64).detach()

    def formula(x):  # Eq. 4-5: W (x - mu), W = L^{-1}, L L^T = Sigma + r I, r = eps tr(Sigma)/D
        xc = x - x.mean(0)
        sigma = xc.T @ xc / (x.shape[0] - 1)
        sigma = sigma + 1e-3 * torch.trace(sigma) / 6 * torch.eye(6, dtype=x.dtype)
        w = torch.linalg.inv(torch.linalg.cholesky(sigma))
        return xc @ w.T

    mine = value_and_grads(lambda x: (whiten(x, 1e-3) * weights).sum(), z)
    ref = value_and_grads(lambda x: (formula(x) * weights).sum(), z)
    assert_all_close(mine, ref, rtol=1e-4, atol=1e-5)


def test_whiten_computes_in_float32_from_bf16():
    z = shifted_randn(64, 8, seed=25).detach().bfloat16()
    w = whiten(z)
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, whiten(z.float()))
