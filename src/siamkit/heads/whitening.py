"""Batch whitening (W-MSE's whitening step): a pure function, no parameters, no running state."""

from __future__ import annotations

import torch


def whiten(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Cholesky whitening of a batch: the output has zero mean and identity covariance.

    ``Whitening(v) = W_V (v - mu_V)`` with ``W_V^T W_V = Sigma_V^{-1}`` and
    ``Sigma_V = 1/(K-1) sum_k (v_k - mu_V)(v_k - mu_V)^T`` [W-MSE, arXiv:2007.06346, Sec. 3,
    Eq. 4-5]. ``W_V = L^{-1}``, the inverse Cholesky factor of ``Sigma_V + r I``, applied by a
    triangular solve in float32; gradients flow through the mean, the covariance and the factor,
    as in the paper (the whitening is part of the loss, not a constant).

    The ridge ``r = eps * tr(Sigma_V) / D`` is not in the paper (the authors' code uses 0). It
    keeps the float32 factorisation defined when a sub-batch is nearly rank-deficient: float32
    rounding perturbs ``Sigma`` by about ``1e-7 ||Sigma|| <= 1e-7 tr(Sigma)``, far below ``r``.
    It is relative to the mean variance so that, like the whitening itself, it does not depend on
    the scale of ``z``.
    The output covariance is ``L^{-1} Sigma L^{-T} = I - r L^{-1} L^{-T}``, with eigenvalues
    ``lambda / (lambda + r)`` for the eigenvalues ``lambda`` of ``Sigma``: identity up to
    ``r / lambda_min``.

    Args:
        z: ``(K, D)`` embeddings; ``K > D`` for a full-rank covariance.
        eps: Ridge added to the covariance's diagonal, relative to its mean diagonal entry.

    Returns:
        ``(K, D)`` float32 whitened embeddings.
    """
    z = z.float()
    # autocast off: it would compute the float32 matmul in bf16, making Sigma indefinite
    with torch.autocast(z.device.type, enabled=False):
        centred = z - z.mean(dim=0)  # (K, D)
        cov = centred.T @ centred / (z.shape[0] - 1)  # (D, D), Eq. 5
        eye = torch.eye(z.shape[1], device=z.device, dtype=z.dtype)
        ridge = eps * torch.diagonal(cov).mean()  # eps x mean variance: scale-free
        chol = torch.linalg.cholesky(cov + ridge * eye)  # Sigma + r I = L L^T
        # (L^{-1} centred^T)^T = centred W^T: each row whitened, Eq. 4.
        return torch.linalg.solve_triangular(chol, centred.T, upper=False).T
