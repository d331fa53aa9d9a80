"""Pipeline step 4: similarities between two batches of representations.

Each function takes ``(B, D)`` tensors and returns ``(B,)`` per-pair similarities (higher is more
similar); the losses in :mod:`siamkit.losses` reduce them. Inputs are cast to float32 so that the
comparison stays exact under bf16 autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of each row pair: ``(a_i / ||a_i||) . (b_i / ||b_i||)``.

    Args:
        a: ``(B, D)``.
        b: ``(B, D)``.
        eps: Lower bound on each norm.

    Returns:
        ``(B,)`` in [-1, 1].
    """
    a, b = a.float(), b.float()
    return (a * b).sum(dim=1) / (a.norm(dim=1).clamp_min(eps) * b.norm(dim=1).clamp_min(eps))


def softmax_cross_entropy(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Negative cross-entropy of channel-softmax distributions: ``softmax(z) . log softmax(p)``.

    The SimSiam paper's alternative similarity, ``D(p, z) = -softmax(z) . log softmax(p)``
    (arXiv:2011.10566, Sec. 4.5); this returns ``-D``, so higher is more similar.

    Args:
        p: ``(B, D)`` prediction (logits over D "channels").
        z: ``(B, D)`` target (logits).

    Returns:
        ``(B,)`` values <= 0.
    """
    return (F.softmax(z.float(), dim=1) * F.log_softmax(p.float(), dim=1)).sum(dim=1)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of every row of ``a`` with every row of ``b`` (contrastive losses).

    ``sim(u, v) = u.v / (||u|| ||v||)`` [SimCLR, arXiv:2002.05709, Sec. 2.1].

    Args:
        a: ``(N, D)``.
        b: ``(M, D)``.
        eps: Lower bound on each norm.

    Returns:
        ``(N, M)`` float32 in [-1, 1]; entry ``(i, j)`` compares ``a_i`` with ``b_j``.
    """
    a_unit = a.float() / a.float().norm(dim=1, keepdim=True).clamp_min(eps)
    b_unit = b.float() / b.float().norm(dim=1, keepdim=True).clamp_min(eps)
    with torch.autocast(a.device.type, enabled=False):  # else the matmul runs in bf16
        return a_unit @ b_unit.t()


def dot_temperature(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits ``a_i . b_j / temperature`` of every pair of rows (inputs used as given).

    With l2-normalised inputs this is MoCo's ``q . k / tau`` [arXiv:1911.05722, Eq. 1].

    Args:
        a: ``(N, D)``.
        b: ``(M, D)``.
        temperature: Softmax temperature ``tau > 0``.

    Returns:
        ``(N, M)`` float32 logits.
    """
    with torch.autocast(a.device.type, enabled=False):  # else the matmul runs in bf16
        return (a.float() @ b.float().t()) / temperature


SIMILARITIES = {"cosine": cosine, "cross_entropy": softmax_cross_entropy}


# --------------------------------------------------------------------------------------------
# Batch statistics: (B, D) in, (D, D) out. They use whatever rows they are given: a loss that
# wants the global batch under DDP passes ``distributed.gather(z)`` (see losses/information.py).
# Their matmuls run with autocast off: under bf16 autocast a float32 ``a.T @ b`` is still computed
# in bf16 (3 significant digits), enough to make a covariance indefinite.
# --------------------------------------------------------------------------------------------
def standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each dimension centred and scaled to unit (biased) variance over the batch.

    ``(z - mean_b z) / sqrt(var_b z + eps)``: a BatchNorm without affine parameters in training
    mode (the official Barlow Twins code applies ``nn.BatchNorm1d(affine=False)``, eps 1e-5).

    Args:
        z: ``(B, D)``.
        eps: Added to the variance.

    Returns:
        ``(B, D)`` float32.
    """
    z = z.float()
    centred = z - z.mean(dim=0)
    return centred / torch.sqrt(centred.pow(2).mean(dim=0) + eps)


def cross_correlation(z_a: torch.Tensor, z_b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Cross-correlation of the dimensions of two views, computed along the batch.

    ``C_ij = sum_b za_bi zb_bj / (sqrt(sum_b za_bi^2) sqrt(sum_b zb_bj^2))`` with each dimension
    mean-centred over the batch [Barlow Twins, arXiv:2103.03230, Eq. 2], i.e. the Pearson
    correlation, in [-1, 1]. Computed as ``standardize(z_a).T @ standardize(z_b) / B`` (biased
    variance: the paper's Algorithm 1 divides by an unbiased std, which would make ``C_ii`` of
    identical inputs ``(B-1)/B`` instead of Eq. 2's 1).

    Args:
        z_a: ``(B, D)`` first view.
        z_b: ``(B, D)`` second view, same images in the same order.
        eps: Added to each variance (see :func:`standardize`).

    Returns:
        ``(D, D)`` float32.
    """
    n = z_a.shape[0]
    with torch.autocast(z_a.device.type, enabled=False):
        return standardize(z_a, eps).T @ standardize(z_b, eps) / n


def covariance(z: torch.Tensor) -> torch.Tensor:
    """Covariance matrix of the dimensions over the batch, unbiased.

    ``C(Z) = 1/(n-1) sum_i (z_i - zbar)(z_i - zbar)^T`` [VICReg, arXiv:2105.04906, Eq. 3]; its
    diagonal is the unbiased variance of each dimension.

    Args:
        z: ``(B, D)``, ``B >= 2``.

    Returns:
        ``(D, D)`` float32.
    """
    z = z.float()
    centred = z - z.mean(dim=0)
    with torch.autocast(z.device.type, enabled=False):
        return centred.T @ centred / (z.shape[0] - 1)
