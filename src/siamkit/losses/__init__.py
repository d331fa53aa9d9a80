"""Pipeline step 5: losses as pure functions, ``(B, D)`` tensors in, scalar out."""

from siamkit.losses.distillation import soft_target_cross_entropy
from siamkit.losses.info_nce import ctr, info_nce, nt_xent
from siamkit.losses.information import VICRegTerms, barlow_twins, vicreg, vicreg_terms, wmse
from siamkit.losses.mi_bounds import (
    MutualInformation,
    derangement,
    dv_bound,
    infonce_bound,
    mine_bound,
    mine_f_bound,
)
from siamkit.losses.negative_similarity import (
    NEGATIVE_SIMILARITY_LOSSES,
    cross_entropy,
    negative_cosine,
)
from siamkit.losses.normalized_mse import normalized_mse
from siamkit.losses.swapped_prediction import sinkhorn, swapped_prediction

__all__ = ["NEGATIVE_SIMILARITY_LOSSES", "cross_entropy", "negative_cosine"]
__all__ += ["ctr", "info_nce", "nt_xent"]
__all__ += ["normalized_mse"]
__all__ += ["VICRegTerms", "barlow_twins", "vicreg", "vicreg_terms", "wmse"]
__all__ += ["sinkhorn", "swapped_prediction"]
__all__ += ["soft_target_cross_entropy"]
__all__ += ["MutualInformation", "derangement", "dv_bound", "infonce_bound", "mine_bound"]
__all__ += ["mine_f_bound"]
