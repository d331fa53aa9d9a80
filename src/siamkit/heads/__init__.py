"""Pipeline step 3: heads that turn backbone features into the compared representation."""

from siamkit.heads.mlp import mlp, prediction_mlp, projection_mlp

__all__ = ["mlp", "prediction_mlp", "projection_mlp"]
