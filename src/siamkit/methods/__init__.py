"""One small file per method; each composes pipeline steps 1-5 and says what is detached.

A method is a :class:`Method` (an ``nn.Module``) built from ``(backbone, config)`` providing:

- ``num_views``: how many augmented views of each image ``training_step`` takes;
- ``training_step(views) -> {"loss": scalar, "embedding": (B, D) detached output, ...}``;
- ``param_groups()``: parameter groups for the optimiser (``fixed_lr: True`` skips the schedule);
- ``on_step_end(progress)``: per-step state updates (EMA, queues), ``progress`` in [0, 1];
- ``backbone``: the :class:`~siamkit.encoders.Encoder` whose features are evaluated and exported;
- ``projector`` and ``encode(x)``: the projection head g and g(f(x)) (the base class's default).

Register it in :data:`METHODS`; the contract tests then cover it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from siamkit.config import MethodConfig
from siamkit.encoders import Encoder
from siamkit.methods.barlow_twins import BarlowTwins, BarlowTwinsConfig
from siamkit.methods.base import Method
from siamkit.methods.byol import BYOL, BYOLConfig
from siamkit.methods.mine import MINE, MINEConfig
from siamkit.methods.moco_v2 import MoCoV2, MoCoV2Config
from siamkit.methods.moco_v3 import MoCoV3, MoCoV3Config
from siamkit.methods.simclr import SimCLR, SimCLRConfig
from siamkit.methods.simsiam import SimSiam, SimSiamConfig
from siamkit.methods.simsiam_ema import SimSiamEMA, SimSiamEMAConfig
from siamkit.methods.swav import SwAV, SwAVConfig
from siamkit.methods.vicreg import VICReg, VICRegConfig
from siamkit.methods.wmse import WMSE, WMSEConfig


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its config dataclass and its constructor."""

    config_class: type[MethodConfig]
    build: Callable[[Encoder, MethodConfig], Method]


METHODS: dict[str, MethodSpec] = {
    "simsiam": MethodSpec(SimSiamConfig, SimSiam),  # type: ignore[arg-type]
    "byol": MethodSpec(BYOLConfig, BYOL),  # type: ignore[arg-type]
    "simsiam_ema": MethodSpec(SimSiamEMAConfig, SimSiamEMA),  # type: ignore[arg-type]
    "swav": MethodSpec(SwAVConfig, SwAV),  # type: ignore[arg-type]
    "simclr": MethodSpec(SimCLRConfig, SimCLR),  # type: ignore[arg-type]
    "moco_v2": MethodSpec(MoCoV2Config, MoCoV2),  # type: ignore[arg-type]
    "moco_v3": MethodSpec(MoCoV3Config, MoCoV3),  # type: ignore[arg-type]
    "barlow_twins": MethodSpec(BarlowTwinsConfig, BarlowTwins),  # type: ignore[arg-type]
    "vicreg": MethodSpec(VICRegConfig, VICReg),  # type: ignore[arg-type]
    "wmse": MethodSpec(WMSEConfig, WMSE),  # type: ignore[arg-type]
    "mine": MethodSpec(MINEConfig, MINE),  # type: ignore[arg-type]
}


def create_method(backbone: Encoder, cfg: MethodConfig) -> Method:
    """Build the method named by ``cfg.name`` around ``backbone``.

    A bare :class:`MethodConfig` (only a name, as in a default ``RunConfig``) stands for that
    method's defaults.
    """
    spec = METHODS[cfg.name]
    if type(cfg) is MethodConfig:
        cfg = spec.config_class(name=cfg.name)
    return spec.build(backbone, cfg)


__all__ = ["METHODS", "Method", "MethodSpec", "create_method"]
__all__ += ["BYOL", "BYOLConfig", "SimSiam", "SimSiamConfig", "SimSiamEMA", "SimSiamEMAConfig"]
__all__ += ["MoCoV2", "MoCoV2Config", "MoCoV3", "MoCoV3Config", "SimCLR", "SimCLRConfig"]
__all__ += ["MINE", "MINEConfig", "SwAV", "SwAVConfig"]
__all__ += ["WMSE", "BarlowTwins", "BarlowTwinsConfig", "VICReg", "VICRegConfig", "WMSEConfig"]
