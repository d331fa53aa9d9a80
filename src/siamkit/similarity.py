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
    (arXiv:2011.10566, Sec. 4.4, Table 4); this returns ``-D``, so higher is more similar.

    Args:
        p: ``(B, D)`` prediction (logits over D "channels").
        z: ``(B, D)`` target (logits).

    Returns:
        ``(B,)`` values <= 0.
    """
    return (F.softmax(z.float(), dim=1) * F.log_softmax(p.float(), dim=1)).sum(dim=1)


SIMILARITIES = {"cosine": cosine, "cross_entropy": softmax_cross_entropy}
