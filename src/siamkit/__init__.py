"""siamkit: self-supervised representation learning of images with siamese networks.

The five-step pipeline, one subpackage each:

1. :mod:`siamkit.data`: image sources and their storage (memory, stream, shards), view recipes;
2. :mod:`siamkit.encoders`: backbones behind one contract;
3. :mod:`siamkit.heads`: projection and prediction MLPs;
4. :mod:`siamkit.similarity`: cosine and friends;
5. :mod:`siamkit.losses`: pure loss functions;

composed per method in :mod:`siamkit.methods`, trained by the one engine in :mod:`siamkit.train`,
measured by :mod:`siamkit.eval`; :mod:`siamkit.analysis` (a checkpoint's figures, the report),
:mod:`siamkit.supervised` (fine-tuning, distillation) and :mod:`siamkit.export` build on them.

The names below are imported on first use (a module ``__getattr__``), so ``import siamkit`` and
``siamkit --help`` do not load torch or Lightning.

Example:
    >>> from siamkit import load_config, pretrain
    >>> result = pretrain(load_config(recipe="simsiam/digits"))
    >>> result.knn_top1, result.random_init_knn_top1

    Any backbone module with ``num_features`` and ``forward_features`` (``as_encoder`` adapts timm
    and torchvision models), read back with a module of the same class:

    >>> import torchvision
    >>> from siamkit import as_encoder, load_backbone
    >>> cfg = load_config(recipe="simsiam/digits")
    >>> result = pretrain(cfg, backbone=as_encoder(torchvision.models.resnet18()))
    >>> _, backbone = load_backbone(result.output_dir,
    ...                             backbone=as_encoder(torchvision.models.resnet18()))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from siamkit.config import RunConfig
from siamkit.errors import SiamkitError

if TYPE_CHECKING:
    from siamkit.checkpoints import load_backbone, load_method
    from siamkit.encoders import Encoder, as_encoder
    from siamkit.recipes import load_config
    from siamkit.train import pretrain

    __version__: str

#: Public names imported on first use, and the module that holds each.
_LAZY = {
    "Encoder": "siamkit.encoders",
    "as_encoder": "siamkit.encoders",
    "load_backbone": "siamkit.checkpoints",
    "load_method": "siamkit.checkpoints",
    "load_config": "siamkit.recipes",
    "pretrain": "siamkit.train",
}

__all__ = [
    "Encoder",
    "RunConfig",
    "SiamkitError",
    "as_encoder",
    "load_backbone",
    "load_config",
    "load_method",
    "pretrain",
]


def _version() -> str:
    """The installed distribution's version (``pyproject.toml`` is its one source)."""
    from importlib import metadata  # itself a few hundredths of a second: on use only

    try:
        return metadata.version("siamkit")
    except metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'siamkit' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "__version__"})
