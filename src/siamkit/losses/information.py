"""Information-maximisation losses: Barlow Twins, VICReg, W-MSE.

Contract: ``z_a``, ``z_b`` (``(B, D)``, two views of the same images in the same order) or a list
of views, scalar out, computed in float32.

Under DDP, Barlow Twins and VICReg need statistics of the *global* batch (standardisation,
covariance). They gather the embeddings with :func:`siamkit.distributed.gather` and every process
computes the loss of the whole batch, so the value is the same on every rank and equals one process
on the whole batch. The gradient needs no rescaling: the gather's backward sums, for this process's
rows, the ``W`` identical gradients of the ``W`` processes, giving ``W * dL/dz_local``; DDP then
averages the parameter gradients over ``W`` processes, which cancels the ``W`` and leaves
exactly the one-process gradient. (The same bookkeeping as "mean over this process's rows": both
give ``W * dL/dz_local``. Dividing the gathered loss by ``W`` would be wrong by ``1/W``.)
``tests/losses/test_information.py`` checks value and gradient in two processes.
"""

from __future__ import annotations

import itertools
from typing import Literal, NamedTuple, overload

import torch
import torch.nn.functional as F

from siamkit import distributed
from siamkit.heads.whitening import whiten
from siamkit.similarity import covariance, cross_correlation


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The ``D*(D-1)`` off-diagonal entries of a square ``(D, D)`` matrix, as a view.

    Dropping the first entry of the flattened matrix puts every diagonal entry at the end of a row
    of length ``D+1``; the remaining ``D`` entries of each row are off-diagonal.
    """
    d = m.shape[0]
    return m.flatten()[1:].view(d - 1, d + 1)[:, :-1]


# --------------------------------------------------------------------------------------------
# Barlow Twins
# --------------------------------------------------------------------------------------------
def barlow_twins(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    lambda_offdiag: float = 5e-3,
    eps: float = 1e-5,
    invariance_weight: float = 1.0,
) -> torch.Tensor:
    """Barlow Twins: make the cross-correlation matrix of the two views the identity.

    ``L = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2`` with ``C`` the cross-correlation of
    the dimensions over the batch (:func:`~siamkit.similarity.cross_correlation`, Eq. 2)
    [Barlow Twins, arXiv:2103.03230, Eq. 1]; ``lambda = 5e-3`` ["Implementation Details";
    the authors' code uses 0.0051]. The batch statistics are those of the global batch under DDP
    (the official code converts the final BN to SyncBatchNorm and all-reduces ``C``); see the
    module docstring for why the gradient needs no rescaling.

    Args:
        z_a: ``(B, D)`` projector output of the first view (no BN: ``C`` standardises).
        z_b: ``(B, D)`` projector output of the second view.
        lambda_offdiag: Weight of the redundancy-reduction (off-diagonal) term.
        eps: Added to each dimension's variance (the official ``BatchNorm1d``'s 1e-5).
        invariance_weight: Weight of the invariance (on-diagonal) term, 1 in the paper; 0 leaves
            the redundancy-reduction term alone, the ablation of its Table 5 ("only red. red.
            term": 0.1%), as ``lambda_offdiag = 0`` leaves the invariance term alone (57.3%).

    Returns:
        Scalar float32 loss; 0 when the views are identical and their dimensions uncorrelated.
    """
    c = cross_correlation(distributed.gather(z_a), distributed.gather(z_b), eps)  # (D, D)
    invariance = (torch.diagonal(c) - 1).pow(2).sum()
    redundancy = off_diagonal(c).pow(2).sum()
    return invariance_weight * invariance + lambda_offdiag * redundancy


# --------------------------------------------------------------------------------------------
# VICReg
# --------------------------------------------------------------------------------------------
class VICRegTerms(NamedTuple):
    """VICReg's three unweighted terms (scalars), for the weighted sum and for logging."""

    invariance: torch.Tensor
    variance: torch.Tensor
    covariance: torch.Tensor


VarianceReduction = Literal["mean", "sum"]
"""How VICReg combines the two branches' variance terms: the code's mean or Eq. 6's sum."""


def vicreg_terms(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    gamma: float = 1.0,
    eps: float = 1e-4,
    *,
    variance_reduction: VarianceReduction = "mean",
) -> VICRegTerms:
    """The invariance, variance and covariance terms of VICReg [arXiv:2105.04906, Sec. 3.1].

    - invariance ``s(Z, Z')``: mean squared difference of the two views, averaged over the batch
      *and* the dimensions. Eq. 5 prints ``1/n sum_i ||z_i - z'_i||^2`` (no ``1/d``), but the same
      paper's Algorithm 1 uses ``F.mse_loss`` (mean over ``n*d``), as does the authors' code, and
      the coefficients ``lambda = mu = 25`` were set with that scale, so the mean is used here.
    - variance: ``v(Z) = 1/d sum_j max(0, gamma - sqrt(Var(z^j) + eps))``, unbiased variance
      [Eq. 1-2], combined over the two branches by ``variance_reduction``. ``"mean"`` (default),
      ``[v(Z) + v(Z')] / 2``, is the authors' code (facebookresearch/vicreg, main_vicreg.py:
      ``std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2``),
      with which the published ``mu = 25`` was tuned and the paper's numbers were produced;
      ``"sum"``, ``v(Z) + v(Z')``, is Eq. 6 as printed, which with the same ``mu`` weights the
      term twice as much.
    - covariance ``c(Z) + c(Z')``: ``c(Z) = 1/d sum_{i != j} C(Z)_ij^2`` with ``C`` the unbiased
      covariance (:func:`~siamkit.similarity.covariance`) [Eq. 3-4, Eq. 6]; the authors' code
      sums the two branches' terms too.

    All three use the global batch under DDP (the authors' code gathers the embeddings too).

    Args:
        z_a: ``(B, D)`` expander output of the first view.
        z_b: ``(B, D)`` expander output of the second view.
        gamma: Target standard deviation, 1 [Sec. 4.1].
        eps: Added to the variance before the square root, 1e-4 [Sec. 3.1].
        variance_reduction: ``"mean"`` (the authors' code) or ``"sum"`` (Eq. 6 as printed) of
            the two branches' variance terms.

    Returns:
        The three terms, float32 scalars, not yet weighted.
    """
    if variance_reduction not in ("mean", "sum"):
        raise ValueError(f"variance_reduction must be 'mean' or 'sum', got {variance_reduction!r}")
    z_a, z_b = distributed.gather(z_a).float(), distributed.gather(z_b).float()
    d = z_a.shape[1]
    invariance = (z_a - z_b).pow(2).mean()
    variance = z_a.new_zeros(())
    cov_term = z_a.new_zeros(())
    for z in (z_a, z_b):
        cov = covariance(z)  # (D, D); its diagonal is the unbiased variance
        variance = variance + F.relu(gamma - torch.sqrt(torch.diagonal(cov) + eps)).mean()
        cov_term = cov_term + off_diagonal(cov).pow(2).sum() / d
    if variance_reduction == "mean":
        variance = variance / 2
    return VICRegTerms(invariance, variance, cov_term)


@overload
def vicreg(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    sim_coeff: float = ...,
    std_coeff: float = ...,
    cov_coeff: float = ...,
    gamma: float = ...,
    eps: float = ...,
    *,
    variance_reduction: VarianceReduction = ...,
    return_terms: Literal[False] = ...,
) -> torch.Tensor: ...


@overload
def vicreg(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    sim_coeff: float = ...,
    std_coeff: float = ...,
    cov_coeff: float = ...,
    gamma: float = ...,
    eps: float = ...,
    *,
    variance_reduction: VarianceReduction = ...,
    return_terms: Literal[True],
) -> tuple[torch.Tensor, VICRegTerms]: ...


def vicreg(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
    *,
    variance_reduction: VarianceReduction = "mean",
    return_terms: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, VICRegTerms]:
    """VICReg: ``lambda s(Z, Z') + mu V + nu [c(Z) + c(Z')]`` [VICReg, Eq. 6; main_vicreg.py].

    ``V`` is ``[v(Z) + v(Z')] / 2`` by default, as the authors' code computes it
    (facebookresearch/vicreg, main_vicreg.py), or ``v(Z) + v(Z')`` with
    ``variance_reduction="sum"``, as Eq. 6 is printed. The published ``lambda = mu = 25``,
    ``nu = 1`` [Sec. 4.1] were tuned with the code, so the default is the code's mean; with the
    sum, the same ``mu`` weights the variance term twice. A coefficient of 0 switches its term off
    (the paper's ablation of the terms, Sec. 4.3). The terms are described in
    :func:`vicreg_terms`.

    Args:
        z_a: ``(B, D)`` expander output of the first view.
        z_b: ``(B, D)`` expander output of the second view.
        sim_coeff: ``lambda``, weight of the invariance term.
        std_coeff: ``mu``, weight of the variance term.
        cov_coeff: ``nu``, weight of the covariance term.
        gamma: Target standard deviation.
        eps: Added to the variance before the square root.
        variance_reduction: ``"mean"`` (default, the authors' code) or ``"sum"`` (Eq. 6 as
            printed) of the two branches' variance terms.
        return_terms: Also return the three unweighted terms (for logging), computed once.

    Returns:
        Scalar float32 loss; with ``return_terms``, ``(loss, terms)``.
    """
    t = vicreg_terms(z_a, z_b, gamma, eps, variance_reduction=variance_reduction)
    loss = sim_coeff * t.invariance + std_coeff * t.variance + cov_coeff * t.covariance
    return (loss, t) if return_terms else loss


# --------------------------------------------------------------------------------------------
# W-MSE
# --------------------------------------------------------------------------------------------
def wmse(
    views: list[torch.Tensor],
    w_size: int = 128,
    w_iter: int = 1,
    eps: float = 1e-9,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """W-MSE: MSE between l2-normalised *whitened* embeddings of every pair of positives.

    ``L = 2 / (N d (d-1)) sum_i sum_{j<k} || zhat_ij - zhat_ik ||^2`` with ``zhat`` the whitened
    (:func:`~siamkit.heads.whitening.whiten`, Eq. 4-5) and l2-normalised embeddings of the
    ``d`` positives of image ``i`` [W-MSE, arXiv:2007.06346, Eq. 6], i.e. the mean over images and
    over the ``d(d-1)/2`` pairs of ``2 - 2 cos``.

    Batch slicing [Sec. 3.1]: the images are permuted at random and split into sub-batches of
    ``w_size``; each view's embeddings of a sub-batch are whitened on their own (as in the authors'
    code: one view per whitening). This is repeated ``w_iter`` times with fresh permutations and
    the losses averaged. A batch that is not a multiple of ``w_size`` is split into
    ``max(B // w_size, 1)`` near-equal sub-batches (a batch smaller than ``w_size`` is whitened
    whole).

    Not gathered under DDP: the whitening statistics are per sub-batch by design, so each process
    whitens its own sub-batches and returns the mean over its rows; DDP's averaging then equals
    one process on the whole batch whose sub-batches are the processes' ones.

    Args:
        views: ``d >= 2`` tensors ``(B, D)``, the projector outputs of the positives, same images
            in the same order.
        w_size: Images per whitening sub-batch; should exceed ``D`` (128 for D = 64 on CIFAR,
            256 for D = 128 [Sec. 5; authors' README]).
        w_iter: Repetitions with fresh random permutations (1; 4 for some W-MSE 2 runs).
        eps: Ridge added to each covariance before its Cholesky factorisation, relative to the
            mean variance (see :func:`~siamkit.heads.whitening.whiten`).
        generator: RNG of the permutations (``None``: torch's global CPU RNG).

    Returns:
        Scalar float32 loss in [0, 4].
    """
    if len(views) < 2:
        raise ValueError(f"W-MSE needs at least two positives, got {len(views)} views")
    n = views[0].shape[0]
    pairs = list(itertools.combinations(range(len(views)), 2))  # d(d-1)/2 positive pairs
    num_sub = max(n // w_size, 1)
    total = views[0].new_zeros((), dtype=torch.float32)
    for _ in range(w_iter):
        perm = torch.randperm(n, generator=generator).to(views[0].device)
        for idx in perm.tensor_split(num_sub):
            # each view's sub-batch whitened separately, then l2-normalised: (w, D) each
            white = [F.normalize(whiten(v[idx], eps), dim=1) for v in views]
            for j, k in pairs:
                total = total + (white[j] - white[k]).pow(2).sum()
    return total / (w_iter * len(pairs) * n)
