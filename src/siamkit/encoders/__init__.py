"""Pipeline step 2: backbones behind one contract (``num_features``, ``forward_features``).

Add a backbone by adding a constructor to :data:`BACKBONES`; the contract tests cover it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial

from siamkit.config import BackboneConfig
from siamkit.encoders.base import Encoder
from siamkit.encoders.resnet import ResNetEncoder, torchvision_resnet
from siamkit.encoders.small_cnn import SmallCNN
from siamkit.errors import ConfigError

#: name -> constructor taking ``width`` and ``cifar_stem`` (and ``norm`` where the backbone
#: offers GroupNorm + Weight Standardisation).
BACKBONES: dict[str, Callable[..., Encoder]] = {
    "resnet18": partial(ResNetEncoder, "resnet18"),
    "resnet34": partial(ResNetEncoder, "resnet34"),
    "resnet50": partial(ResNetEncoder, "resnet50"),
    "small_cnn": SmallCNN,
}


def create_backbone(cfg: BackboneConfig) -> Encoder:
    """Build the backbone named by ``cfg``; it follows the :class:`Encoder` contract."""
    if cfg.name not in BACKBONES:
        raise ConfigError(
            f"unknown backbone {cfg.name!r}; valid backbones: {', '.join(sorted(BACKBONES))}"
        )
    build = BACKBONES[cfg.name]
    options: dict[str, object] = {"width": cfg.width, "cifar_stem": cfg.cifar_stem}
    if cfg.norm != "batch":  # only passed when asked for: not every backbone has the option
        if "norm" not in inspect.signature(build).parameters:
            raise ConfigError(
                f"backbone {cfg.name!r} has no backbone.norm option; use backbone.norm: batch"
            )
        options["norm"] = cfg.norm
    return build(**options)


__all__ = [
    "BACKBONES",
    "Encoder",
    "ResNetEncoder",
    "SmallCNN",
    "create_backbone",
    "torchvision_resnet",
]
