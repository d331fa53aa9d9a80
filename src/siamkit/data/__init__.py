"""Pipeline step 1: image sources, their storage (memory, stream, shards) and view recipes."""

from siamkit.data.augment import BatchViews, eval_views, torchvision_views
from siamkit.data.datasets import ImageSet, Splits, load_splits, require_labels
from siamkit.data.loader import Batch, ImageData, make_loader
from siamkit.data.stream import StreamSet
from siamkit.data.views import Views

__all__ = [
    "Batch",
    "BatchViews",
    "ImageData",
    "ImageSet",
    "Splits",
    "StreamSet",
    "Views",
    "eval_views",
    "load_splits",
    "make_loader",
    "require_labels",
    "torchvision_views",
]
