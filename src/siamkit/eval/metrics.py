"""Representation metrics: collapse std, effective rank (RankMe), alignment and uniformity.

Pure functions of ``(N, D)`` embeddings that return a float.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from siamkit.errors import ConfigError, DataError


def output_std(z: torch.Tensor) -> float:
    """Collapse metric: per-channel std of the l2-normalised output, averaged, times sqrt(d).

    SimSiam (arXiv:2011.10566, Sec. 4.1, Fig. 2) tracks ``std(z / ||z||)``; for outputs spread
    like a d-dimensional isotropic Gaussian it is ``1 / sqrt(d)``, and 0 when every output is
    the same vector. Multiplying by ``sqrt(d)`` makes it about 1 when healthy, 0 when collapsed.

    Args:
        z: ``(B, d)`` outputs, B >= 2.
    """
    z = F.normalize(z.float(), dim=1)
    return float(z.std(dim=0).mean() * math.sqrt(z.shape[1]))


def _check_points(z: torch.Tensor, what: str, min_rows: int = 1) -> None:
    """A DataError unless ``z`` is ``(N, D)`` with at least ``min_rows`` rows."""
    if z.dim() != 2 or z.shape[0] < min_rows or z.shape[1] < 1:
        raise DataError(
            f"{what} takes (N, D) embeddings with N >= {min_rows}, got shape {tuple(z.shape)}; "
            "pass one row per image"
        )


def rankme(z: torch.Tensor, eps: float = 1e-7) -> float:
    """Effective rank of the embeddings: exp of the entropy of the normalised singular values.

    RankMe [Garrido et al., arXiv:2210.02885, Sec. 3, Eq. 1]:
    ``p_k = sigma_k / ||sigma||_1 + eps``, ``RankMe(Z) = exp(-sum_k p_k log p_k)``. It lies in
    ``[1, min(N, D)]`` (up to ``eps``): about ``min(N, D)`` for isotropic embeddings, about ``k``
    for embeddings spanning k equally used directions, and 1 for a collapse onto a line. It is
    computed on the raw (un-normalised) embeddings, as in the paper; ``eps`` is its default.

    Args:
        z: ``(N, D)`` embeddings.
        eps: Added to every normalised singular value (keeps ``log`` finite).
    """
    _check_points(z, "rankme")
    sigma = torch.linalg.svdvals(z.double())  # (min(N, D),)
    p = sigma / sigma.sum().clamp_min(torch.finfo(torch.float64).tiny) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def alignment(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 2.0) -> float:
    """Alignment of positive pairs: ``E ||f(x) - f(y)||_2^alpha`` on l2-normalised outputs.

    Wang & Isola [arXiv:2005.10242, Sec. 4.1, Eq. 4]; ``alpha = 2`` is their default. Row ``i`` of
    ``z1`` and of ``z2`` are the two views of one image. 0 when both views map to the same point
    (lower is better); at most ``2^alpha`` (antipodal points).

    Args:
        z1: ``(N, D)`` outputs of the first views.
        z2: ``(N, D)`` outputs of the second views of the same images.
        alpha: Exponent of the distance (> 0).
    """
    _check_points(z1, "alignment")
    if not alpha > 0:
        raise ConfigError(f"alignment's alpha must be positive (2 in the paper), got {alpha}")
    if z1.shape != z2.shape:
        raise DataError(
            f"alignment needs two views of the same images, got shapes {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}; pass row-aligned (N, D) outputs of both views"
        )
    d = (F.normalize(z1.double(), dim=1) - F.normalize(z2.double(), dim=1)).norm(dim=1)  # (N,)
    return float(d.pow(alpha).mean())


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """Uniformity on the hypersphere: ``log E exp(-t ||f(x) - f(y)||_2^2)`` over distinct pairs.

    Wang & Isola [arXiv:2005.10242, Sec. 4.1, Eq. 5], the log of the average pairwise Gaussian
    potential of the l2-normalised outputs; ``t = 2`` is their default. 0 when every output is
    the same point, more negative for more uniformly spread outputs (lower is better); its
    minimum is ``-4t`` (all pairs antipodal). The mean runs over the ``N (N - 1) / 2`` pairs
    ``i < j``, which equals the mean over ordered pairs ``i != j``.

    Args:
        z: ``(N, D)`` outputs, N >= 2.
        t: Scale of the Gaussian potential (> 0).
    """
    _check_points(z, "uniformity", min_rows=2)
    if not t > 0:
        raise ConfigError(f"uniformity's t must be positive (2 in the paper), got {t}")
    sq = torch.pdist(F.normalize(z.double(), dim=1)).pow(2)  # (N (N - 1) / 2,)
    # log mean exp, stably
    return float(torch.logsumexp(-t * sq, dim=0) - math.log(sq.numel()))
