"""Pipeline step 5: losses as pure functions, ``(B, D)`` tensors in, scalar out."""

from siamkit.losses.negative_similarity import (
    NEGATIVE_SIMILARITY_LOSSES,
    cross_entropy,
    negative_cosine,
)

__all__ = ["NEGATIVE_SIMILARITY_LOSSES", "cross_entropy", "negative_cosine"]
