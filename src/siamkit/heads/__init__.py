"""Pipeline step 3: heads that turn backbone features into the compared representation."""

from siamkit.heads.mlp import mlp, prediction_mlp, projection_mlp
from siamkit.heads.prototypes import Prototypes
from siamkit.heads.statistics import StatisticsNetwork
from siamkit.heads.whitening import whiten

__all__ = ["mlp", "prediction_mlp", "projection_mlp"]
__all__ += ["whiten"]
__all__ += ["Prototypes", "StatisticsNetwork"]
