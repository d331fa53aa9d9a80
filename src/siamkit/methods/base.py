"""The method contract: what the training loop may call. No training logic lives here."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Method(nn.Module):
    """Base of every method (a small declaration, not a framework).

    Attributes:
        backbone: The encoder whose features are evaluated and exported.
        num_views: Augmented views of each image that ``training_step`` takes.
    """

    backbone: nn.Module
    num_views: int = 2

    def training_step(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"loss": scalar, "embedding": (B, D) detached output, ...}`` for one batch."""
        raise NotImplementedError

    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups for the optimiser; ``fixed_lr: True`` exempts a group from decay."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def on_step_end(self, progress: float) -> None:
        """Per-step state updates (EMA, queues); ``progress`` runs from 0 to 1 over training."""
