"""The one encoder contract every backbone follows (pipeline step 2)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Encoder(Protocol):
    """A backbone: images in, one feature vector per image out.

    Attributes:
        num_features: Width of ``forward_features``'s output (the representation ``h`` that
            downstream tasks use, before any projection head).
    """

    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images to ``(B, num_features)`` features."""
        ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...
