"""BYOL's loss: the mean squared error between l2-normalised prediction and target.

Contract: ``p`` (prediction) and ``z`` (target), ``(B, D)`` tensors in, scalar out. The method
decides what carries gradient (BYOL's target comes from its EMA network under ``no_grad``).
"""

from __future__ import annotations

import torch

from siamkit.losses.negative_similarity import negative_cosine


def normalized_mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``||p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z)``, averaged over the batch.

    [BYOL, arXiv:2006.07733, Sec. 3.1, Eq. 2]. For unit vectors the squared distance is
    ``2 - 2 cos``, so this is ``2 + 2 * negative_cosine`` (SimSiam's D, scaled by 2 and shifted
    by 2): in [0, 4], 0 when every pair is aligned. Computed in float32.

    Args:
        p: ``(B, D)`` predictions.
        z: ``(B, D)`` targets.

    Returns:
        Scalar.
    """
    return 2.0 + 2.0 * negative_cosine(p, z)
