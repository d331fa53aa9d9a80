"""A small CNN for the embedded digits default: trains in seconds on a CPU."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from siamkit.encoders.base import Encoder
from siamkit.normalization import WSConv2d, group_norm


def _conv_bn(cin: int, cout: int, stride: int, norm: str = "batch") -> list[nn.Module]:
    # No conv bias: the BatchNorm (or GroupNorm) that follows has its own shift.
    if norm == "group_ws":  # batch-independent [arXiv:2010.10241, Sec. 3]
        return [WSConv2d(cin, cout, 3, stride, 1, bias=False), group_norm(cout), nn.ReLU(True)]
    if norm == "none":  # no normalisation: the convolution keeps its bias
        return [nn.Conv2d(cin, cout, 3, stride, 1), nn.ReLU(True)]
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


class SmallCNN(Encoder):
    """Four 3x3 conv-BN-ReLU stages (strides 1, 2, 2, 2) and global average pooling.

    On 32x32 input the stages see 32, 16, 8 and 4 pixels.

    Args:
        width: Multiplier of the channel counts 32, 64, 128, 128.
        norm: ``batch``, ``group_ws`` (GroupNorm + weight-standardised convolutions) or
            ``none`` (no normalisation layer).
    """

    def __init__(self, width: float = 1.0, cifar_stem: bool = False, norm: str = "batch") -> None:
        super().__init__()
        del cifar_stem  # the small CNN always has a 3x3 stride-1 stem
        if norm not in ("batch", "group_ws", "none"):
            raise ValueError(f"unknown norm {norm!r}; choose from 'batch', 'group_ws', 'none'")
        self.arch: dict[str, Any] = {"name": "small_cnn", "width": width, "cifar_stem": True}
        if norm != "batch":  # recorded only when not the default, so BN exports are unchanged
            self.arch["norm"] = norm
        chans = [max(1, round(c * width)) for c in (32, 64, 128, 128)]
        layers: list[nn.Module] = []
        cin = 3
        for i, cout in enumerate(chans):
            layers += _conv_bn(cin, cout, 1 if i == 0 else 2, norm)
            cin = cout
        self.features = nn.Sequential(*layers)
        self.num_features = chans[-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, num_features)``."""
        return self.features(x).mean(dim=(2, 3))
