"""siamkit: self-supervised representation learning of images with siamese networks.

The five-step pipeline, one subpackage each:

1. :mod:`siamkit.data`: datasets as uint8 tensors, batched view recipes;
2. :mod:`siamkit.encoders`: backbones behind one contract;
3. :mod:`siamkit.heads`: projection and prediction MLPs;
4. :mod:`siamkit.similarity`: cosine and friends;
5. :mod:`siamkit.losses`: pure loss functions;

composed per method in :mod:`siamkit.methods`, trained by the one loop in :mod:`siamkit.train`,
evaluated by :mod:`siamkit.eval`.

Example:
    >>> from siamkit import load_config, pretrain
    >>> result = pretrain(load_config("configs/simsiam/digits.yaml"))
    >>> result.knn_top1, result.random_init_knn_top1
"""

from siamkit.config import RunConfig, load_config
from siamkit.errors import SiamkitError
from siamkit.train import load_backbone, load_method, pretrain

__version__ = "0.1.0"

__all__ = ["RunConfig", "SiamkitError", "load_backbone", "load_config", "load_method", "pretrain"]
