"""The one encoder contract every backbone follows (pipeline step 2)."""

from __future__ import annotations

import torch
from torch import nn


class Encoder(nn.Module):
    """A backbone: images in, one feature vector per image out.

    A base class rather than a structural protocol so that ``method.backbone.forward_features``
    and ``num_features`` are typed wherever a backbone is held. It adds no parameters, buffers or
    submodules, so a backbone's state-dict keys are those of its own layers.

    Attributes:
        num_features: Width of ``forward_features``'s output (the representation ``h`` that
            downstream tasks use, before any projection head).
    """

    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images to ``(B, num_features)`` features."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward_features")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same as :meth:`forward_features`, so that ``encoder(x)`` gives the features."""
        # Dispatches at call time: ``forward = forward_features`` would bind this base's stub,
        # not a subclass's override.
        return self.forward_features(x)
