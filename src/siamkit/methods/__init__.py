"""One small file per method; each composes pipeline steps 1-5 and says what is detached.

A method is a :class:`Method` (an ``nn.Module``) built from ``(backbone, config)`` providing:

- ``num_views``: how many augmented views of each image ``training_step`` takes;
- ``training_step(views) -> {"loss": scalar, "embedding": (B, D) detached output, ...}``;
- ``param_groups()``: parameter groups for the optimiser (``fixed_lr: True`` skips the schedule);
- ``on_step_end(progress)``: per-step state updates (EMA, queues), ``progress`` in [0, 1];
- ``backbone``: the :class:`~siamkit.encoders.Encoder` whose features are evaluated and exported;
- ``projector`` and ``encode(x)``: the projection head g and g(f(x)) (the base class's default).

Register it in :data:`siamkit.registry.METHODS` (CONTRIBUTING.md walks through it); the
contract tests then cover it.
"""

from __future__ import annotations

from dataclasses import dataclass

from siamkit import registry
from siamkit.config import MethodConfig
from siamkit.encoders import Encoder
from siamkit.errors import ConfigError
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
from siamkit.registry import Entry


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its config dataclass and its class.

    ``method_class(backbone, cfg)`` takes an instance of ``config_class``; :meth:`create` checks
    that before calling it, which is what lets one registry hold every method without casts.
    """

    config_class: type[MethodConfig]
    method_class: type[Method]

    def create(self, backbone: Encoder, cfg: MethodConfig) -> Method:
        """The method around ``backbone``; a bare :class:`MethodConfig` means the defaults."""
        if type(cfg) is MethodConfig:
            cfg = self.config_class(name=cfg.name)
        if not isinstance(cfg, self.config_class):
            raise ConfigError(
                f"method {cfg.name!r} needs a {self.config_class.__name__}, got "
                f"{type(cfg).__name__}: build it with siamkit.recipes.load_config or that class"
            )
        return self.method_class(backbone, cfg)


def _spec(name: str, entry: Entry) -> MethodSpec:
    """The spec of the method class ``entry`` names (checked: a Method with a config class)."""
    cls = entry.load()
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"registry entry {name!r} ({entry.target}) is not a Method subclass")
    return MethodSpec(cls.config_class, cls)


#: Every method of :data:`siamkit.registry.METHODS`, by name.
METHODS: dict[str, MethodSpec] = {name: _spec(name, e) for name, e in registry.METHODS.items()}


def create_method(backbone: Encoder, cfg: MethodConfig) -> Method:
    """Build the method named by ``cfg.name`` around ``backbone``.

    A bare :class:`MethodConfig` (only a name, as in a default ``RunConfig``) stands for that
    method's defaults.
    """
    return METHODS[cfg.name].create(backbone, cfg)


__all__ = ["METHODS", "Method", "MethodSpec", "create_method"]
__all__ += ["BYOL", "BYOLConfig", "SimSiam", "SimSiamConfig", "SimSiamEMA", "SimSiamEMAConfig"]
__all__ += ["MoCoV2", "MoCoV2Config", "MoCoV3", "MoCoV3Config", "SimCLR", "SimCLRConfig"]
__all__ += ["MINE", "MINEConfig", "SwAV", "SwAVConfig"]
__all__ += ["WMSE", "BarlowTwins", "BarlowTwinsConfig", "VICReg", "VICRegConfig", "WMSEConfig"]
