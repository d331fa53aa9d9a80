"""Optimiser and learning-rate schedule shared by every method."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class StepSchedule:
    """Length of a run in optimiser steps, read at every step by the schedule.

    The training loop estimates it from the data before training and sets the loader's real
    batch count once training starts (litdata's per-rank split can drop a few batches), so the
    cosine always ends at the last step.

    Attributes:
        total_steps: Optimiser steps of the whole run.
        warmup_steps: Steps of linear warm-up.
    """

    total_steps: int
    warmup_steps: int = 0


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling [You et al., arXiv:1708.03888].

    For each parameter tensor ``w`` with gradient ``g`` in a group with ``adapt=True``:

        u = g + weight_decay * w
        trust = eta * ||w|| / ||u||   (1 where either norm is 0)
        v <- momentum * v + lr * trust * u;   w <- w - v

    Groups with ``adapt=False`` (biases and norm parameters, by :func:`build_optimizer`) take
    plain SGD steps without weight decay, as SimCLR's and BYOL's LARS do.
    """

    def __init__(
        self,
        params: Any,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
    ) -> None:
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta}
        super().__init__(params, defaults)

    # torch's stub overloads step on the closure's presence; one signature does the same here.
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One LARS step (see the class docstring)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            adapt = group.get("adapt", True)
            for w in group["params"]:
                if w.grad is None:
                    continue
                u = w.grad
                if adapt:
                    u = u.add(w, alpha=group["weight_decay"])
                    w_norm, u_norm = w.norm(), u.norm()
                    trust = torch.where(
                        (w_norm > 0) & (u_norm > 0), group["eta"] * w_norm / u_norm, 1.0
                    )
                    u = u * trust
                state = self.state[w]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(w)
                v = state["momentum_buffer"]
                v.mul_(group["momentum"]).add_(u, alpha=group["lr"])
                w.sub_(v)
        return loss


def group_name(group: dict[str, Any], index: int, count: int) -> str:
    """A parameter group's name in the logs (``lr/<name>``).

    Its own ``name`` (SimSiam's ``encoder`` and ``predictor``), else ``all`` for an optimiser's
    only group, else ``group<index>``.
    """
    return str(group.get("name") or ("all" if count == 1 else f"group{index}"))


def _split_for_lars(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each group twice: weights (adapted, decayed) and biases/norm parameters (``ndim <= 1``)."""
    out = []
    for g in groups:
        params = list(g["params"])
        for adapt in (True, False):
            chosen = [p for p in params if (p.ndim > 1) == adapt]
            if chosen:
                out.append({**g, "params": chosen, "adapt": adapt})
    return out


def build_optimizer(
    param_groups: list[dict[str, Any]], cfg: OptimConfig, schedule: StepSchedule
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """``cfg.optimizer`` at ``cfg.lr`` with a per-step cosine schedule.

    ``fixed_lr`` groups stay constant.

    Args:
        param_groups: From the method's ``param_groups()``.
        cfg: Optimiser config.
        schedule: Steps of the run and of the warm-up (read at every step).
    """
    # Every group named before LARS halves it: both halves keep the method's group name (and
    # its learning rate), so the logs show one lr per group of the method.
    n = len(param_groups)
    param_groups = [{**g, "name": group_name(g, i, n)} for i, g in enumerate(param_groups)]
    if cfg.optimizer == "lars":
        param_groups = _split_for_lars(param_groups)
    groups = [{k: v for k, v in g.items() if k != "fixed_lr"} for g in param_groups]
    optimizer: torch.optim.Optimizer
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    elif cfg.optimizer == "lars":
        optimizer = LARS(
            groups,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            eta=cfg.lars_eta,
        )
    else:  # adamw; MoCo v3 uses betas (0.9, 0.999)
        optimizer = torch.optim.AdamW(
            groups, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay
        )

    def constant(step: int) -> float:
        return 1.0

    def decayed(step: int) -> float:
        return cosine_with_warmup(step, schedule.total_steps, schedule.warmup_steps)

    lambdas: list[Callable[[int], float]] = [
        constant if g.get("fixed_lr") else decayed for g in param_groups
    ]
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
