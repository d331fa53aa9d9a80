"""Contrastive (InfoNCE-family) losses: cross-entropy over similarity logits, one positive each.

Contract: ``(B, D)`` tensors in, scalar out, computed in float32. Losses that need the global
batch gather it with :mod:`siamkit.distributed` and return the mean over THIS process's anchors,
so that DDP's gradient averaging equals one process on the whole batch.

- :func:`nt_xent`: SimCLR, the two views of the batch are each other's negatives.
- :func:`info_nce`: MoCo v1/v2, negatives from a queue of earlier keys.
- :func:`ctr`: MoCo v3, the keys of the (global) batch are the negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from siamkit import distributed
from siamkit.similarity import cosine, cosine_matrix


def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalized temperature-scaled cross-entropy (NT-Xent).

    For the 2N views of a batch, with ``sim`` the cosine similarity [arXiv:2002.05709, Eq. 1]:

        l(i, j) = -log exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau)

    where j is the other view of i's image: 1 positive and 2N-2 negatives per anchor; the loss
    averages l over all 2N anchors (Alg. 1). Under DDP the views of every process are gathered
    (with gradient), so each anchor has 2WN-2 negatives from the global batch, and this returns
    the mean over this process's 2N anchors.

    Args:
        z_a: ``(N, D)`` projections of the first views.
        z_b: ``(N, D)`` projections of the second views, row i the same image as ``z_a[i]``.
        temperature: ``tau`` (0.5 for CIFAR-10, Appendix B.9; 0.1 for ImageNet at batch 4096).

    Returns:
        Scalar float32 loss.
    """
    if z_a.shape != z_b.shape:
        raise ValueError(f"z_a and z_b must have the same shape, got {z_a.shape} and {z_b.shape}")
    n = z_a.shape[0]
    rows = distributed.local_rows(n)
    all_a, all_b = distributed.gather(z_a), distributed.gather(z_b)  # (WN, D) each
    n_all = all_a.shape[0]
    candidates = torch.cat([all_a, all_b])  # (2WN, D): every view of the global batch
    anchors = torch.cat([all_a[rows], all_b[rows]])  # (2N, D): this process's views
    logits = cosine_matrix(anchors, candidates) / temperature  # (2N, 2WN)
    own = torch.arange(rows.start, rows.stop, device=logits.device)  # global image indices
    self_col = torch.cat([own, own + n_all])  # where each anchor meets itself
    positive_col = torch.cat([own + n_all, own])  # its other view
    is_self = F.one_hot(self_col, 2 * n_all).bool()
    logits = logits.masked_fill(is_self, float("-inf"))  # k != i in the denominator
    return F.cross_entropy(logits, positive_col)


def info_nce(
    q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> torch.Tensor:
    """MoCo's InfoNCE with a queue of negative keys.

    [MoCo, arXiv:1911.05722, Eq. 1; MoCo v2, arXiv:2003.04297]:

        L_q = -log exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_{k-} exp(q.k- / tau))

    i.e. a (1+K)-way cross-entropy with the positive at index 0 (Alg. 1). Queries and keys are
    l2-normalised here (the encoders' outputs are normalised in MoCo), so ``q.k`` is a cosine.
    Whether ``k`` carries gradient is the method's decision (MoCo's keys come from ``no_grad``).

    Args:
        q: ``(B, D)`` queries.
        k: ``(B, D)`` positive keys, row i the key of ``q[i]``.
        negatives: ``(K, D)`` negative keys (the queue).
        temperature: ``tau`` (0.07 in MoCo v1, 0.2 in MoCo v2).

    Returns:
        Scalar float32 loss, averaged over the B queries.
    """
    l_pos = cosine(q, k)[:, None]  # (B, 1)
    l_neg = cosine_matrix(q, negatives)  # (B, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature  # (B, 1+K)
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)


def ctr(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo v3's contrastive loss [arXiv:2104.02057, Eq. 1 and Alg. 1].

        ctr(q, k) = 2 tau * CrossEntropy(q @ k_all.T / tau, labels)

    with q and k l2-normalised, ``k_all`` the keys of every process (the other images of the
    global batch are the negatives) and ``labels`` this process's rows of ``k_all``. The keys
    come from the momentum encoder and are constants: they are detached and gathered without
    gradient. The factor ``2 tau`` is the paper's pseudocode (it makes the gradient scale
    independent of tau). Returns the mean over this process's queries.

    Args:
        q: ``(N, D)`` queries (predictor outputs of one view).
        k: ``(N, D)`` keys (momentum encoder outputs of the other view), row i the same image.
        temperature: ``tau`` (1.0 for ResNet-50 and 0.2 for ViT in the released code).

    Returns:
        Scalar float32 loss.
    """
    n = q.shape[0]
    k_all = distributed.gather_no_grad(k.detach())  # (WN, D), constants
    logits = cosine_matrix(q, k_all) / temperature  # (N, WN)
    rows = distributed.local_rows(n)
    labels = torch.arange(rows.start, rows.stop, device=q.device)
    return 2 * temperature * F.cross_entropy(logits, labels)
