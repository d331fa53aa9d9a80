"""Pipeline step 2: backbones behind one contract (``num_features``, ``forward_features``).

Add a backbone by registering its constructor in :data:`siamkit.registry.BACKBONES` (see
CONTRIBUTING.md); :data:`BACKBONES` and the contract tests then cover it. Any timm
model is ``timm/<model>`` (:class:`TimmEncoder`); any other module meeting the contract is passed
to ``pretrain(cfg, backbone=module)`` (:func:`as_encoder` adapts timm and torchvision models).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from siamkit import registry
from siamkit.config import CUSTOM_PREFIX, TIMM_PREFIX, BackboneConfig
from siamkit.encoders.adapters import ModuleEncoder, as_encoder, custom_backbone_name
from siamkit.encoders.base import Encoder, check_encoder
from siamkit.encoders.resnet import ResNetEncoder, torchvision_resnet
from siamkit.encoders.small_cnn import SmallCNN
from siamkit.encoders.timm_models import TimmEncoder, freeze_patch_embed
from siamkit.errors import ConfigError
from siamkit.registry import Entry


def _constructor(name: str, entry: Entry) -> Callable[..., Encoder]:
    """The constructor ``entry`` names, checked to be callable."""
    build = entry.load()
    if not callable(build):
        raise TypeError(f"registry entry {name!r} ({entry.target}) is not a constructor")
    return build


#: name -> constructor taking ``width`` and ``cifar_stem`` (and ``norm`` where the backbone
#: offers GroupNorm + Weight Standardisation).
BACKBONES: dict[str, Callable[..., Encoder]] = {
    name: _constructor(name, entry) for name, entry in registry.BACKBONES.items()
}


def create_backbone(cfg: BackboneConfig) -> Encoder:
    """Build the backbone named by ``cfg``; it follows the :class:`Encoder` contract.

    Raises:
        ConfigError: An unknown name, an option the backbone lacks, timm missing, or a
            ``custom/`` name (a module passed to ``pretrain``; no config rebuilds it).
    """
    if cfg.is_timm:
        encoder = TimmEncoder(cfg.name[len(TIMM_PREFIX) :], **_timm_options(cfg))
        if cfg.freeze_patch_embed:
            freeze_patch_embed(encoder.model)
        return encoder
    if cfg.name.startswith(CUSTOM_PREFIX):
        raise ConfigError(
            f"backbone {cfg.name!r} was a module passed to pretrain(cfg, backbone=module); no "
            "config can rebuild it: pass a module of that class again (e.g. "
            "load_method(path, backbone=module))"
        )
    if cfg.name not in BACKBONES:
        raise ConfigError(
            f"unknown backbone {cfg.name!r}; valid backbones: {', '.join(sorted(BACKBONES))}, "
            "or timm/<model> for any timm model"
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


def _timm_options(cfg: BackboneConfig) -> dict[str, object]:
    """``backbone.timm_kwargs`` for timm: lists become tuples (``img_size: [32, 32]``)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.timm_kwargs.items()}


__all__ = [
    "BACKBONES",
    "Encoder",
    "ModuleEncoder",
    "ResNetEncoder",
    "SmallCNN",
    "TimmEncoder",
    "as_encoder",
    "check_encoder",
    "create_backbone",
    "custom_backbone_name",
    "freeze_patch_embed",
    "torchvision_resnet",
]
