"""Pipeline step 1: datasets as uint8 tensors and batched view recipes."""

from siamkit.data.augment import BatchViews, eval_views, torchvision_views
from siamkit.data.datasets import (
    ImageSet,
    Splits,
    as_batch,
    batch_dataset,
    decode_image,
    load_splits,
    require_labels,
)

__all__ = [
    "BatchViews",
    "ImageSet",
    "Splits",
    "as_batch",
    "batch_dataset",
    "decode_image",
    "eval_views",
    "load_splits",
    "require_labels",
    "torchvision_views",
]
