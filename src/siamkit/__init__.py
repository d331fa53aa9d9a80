"""siamkit: self-supervised representation learning of images with siamese networks.

The five-step pipeline, one subpackage each:

1. :mod:`siamkit.data`: image sources and their storage (memory, stream, shards), view recipes;
2. :mod:`siamkit.encoders`: backbones behind one contract;
3. :mod:`siamkit.heads`: projection and prediction MLPs;
4. :mod:`siamkit.similarity`: cosine and friends;
5. :mod:`siamkit.losses`: pure loss functions;

composed per method in :mod:`siamkit.methods`, trained by the one engine in :mod:`siamkit.train`,
measured by :mod:`siamkit.eval`; :mod:`siamkit.protocols` builds fine-tuning, distillation, the
report and export on them.

Example:
    >>> from siamkit import load_config, pretrain
    >>> result = pretrain(load_config("configs/simsiam/digits.yaml"))
    >>> result.knn_top1, result.random_init_knn_top1
"""

from siamkit.checkpoints import load_backbone, load_method
from siamkit.config import RunConfig
from siamkit.errors import SiamkitError
from siamkit.recipes import load_config
from siamkit.train import pretrain

__version__ = "0.1.0"

__all__ = ["RunConfig", "SiamkitError", "load_backbone", "load_config", "load_method", "pretrain"]
