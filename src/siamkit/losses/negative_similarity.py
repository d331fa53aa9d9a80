"""Losses that pull a prediction towards a target: the negated mean of a similarity.

Contract: ``p`` (prediction) and ``z`` (target), ``(B, D)`` tensors in, scalar out. Whether ``z``
carries gradient is the method's decision (SimSiam detaches it where the method says so).
"""

from __future__ import annotations

import torch

from siamkit.similarity import cosine, softmax_cross_entropy


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's ``D(p, z) = -(p / ||p||) . (z / ||z||)``, averaged over the batch.

    [SimSiam, arXiv:2011.10566, Eq. 1]. Minimum -1 when every pair is aligned.
    """
    return -cosine(p, z).mean()


def cross_entropy(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``D(p, z) = -softmax(z) . log softmax(p)``, averaged [SimSiam, Sec. 4.5]."""
    return -softmax_cross_entropy(p, z).mean()


#: similarity name (``similarity`` in a method config) -> loss
NEGATIVE_SIMILARITY_LOSSES = {"cosine": negative_cosine, "cross_entropy": cross_entropy}
