"""One small file per method; each composes pipeline steps 1-5 and says what is detached.

A method is a :class:`Method` (an ``nn.Module``) built from ``(backbone, config)`` providing:

- ``num_views``: how many augmented views of each image ``training_step`` takes;
- ``training_step(views) -> {"loss": scalar, "embedding": (B, D) detached output, ...}``;
- ``param_groups()``: parameter groups for the optimiser (``fixed_lr: True`` skips the schedule);
- ``on_step_end(progress)``: per-step state updates (EMA, queues), ``progress`` in [0, 1];
- ``backbone``: the encoder whose features are evaluated and exported.

Register it in :data:`METHODS`; the contract tests then cover it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from siamkit.config import MethodConfig
from siamkit.methods.base import Method
from siamkit.methods.simsiam import SimSiam, SimSiamConfig


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its config dataclass and its constructor."""

    config_class: type[MethodConfig]
    build: Callable[[nn.Module, MethodConfig], Method]


METHODS: dict[str, MethodSpec] = {
    "simsiam": MethodSpec(SimSiamConfig, SimSiam),  # type: ignore[arg-type]
}


def create_method(backbone: nn.Module, cfg: MethodConfig) -> Method:
    """Build the method named by ``cfg.name`` around ``backbone``."""
    return METHODS[cfg.name].build(backbone, cfg)


__all__ = ["METHODS", "Method", "MethodSpec", "SimSiam", "SimSiamConfig", "create_method"]
