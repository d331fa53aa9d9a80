"""Optimiser and learning-rate schedule shared by every method."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from siamkit.config import OptimConfig


def cosine_with_warmup(step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the peak lr at ``step``: linear warm-up, then half a cosine to 0.

    SimSiam decays the lr as ``lr x 0.5 (1 + cos(pi t / T))`` (arXiv:2011.10566, Sec. 4.1,
    following SGDR); here per step rather than per epoch.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def build_optimizer(
    param_groups: list[dict[str, Any]], cfg: OptimConfig, total_steps: int, warmup_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """SGD at ``cfg.lr`` with a per-step cosine schedule; ``fixed_lr`` groups stay constant.

    Args:
        param_groups: From the method's ``param_groups()``.
        cfg: Optimiser config.
        total_steps: Optimiser steps of the whole run.
        warmup_steps: Steps of linear warm-up.
    """
    groups = [{k: v for k, v in g.items() if k != "fixed_lr"} for g in param_groups]
    optimizer = torch.optim.SGD(
        groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )

    def constant(step: int) -> float:
        return 1.0

    def decayed(step: int) -> float:
        return cosine_with_warmup(step, total_steps, warmup_steps)

    lambdas: list[Callable[[int], float]] = [
        constant if g.get("fixed_lr") else decayed for g in param_groups
    ]
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
