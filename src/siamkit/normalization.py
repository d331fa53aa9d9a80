"""Normalisation without batch statistics, for encoders (step 2) and heads (step 3).

BYOL's BatchNorm question: BN mixes the images of a batch, and was suspected of acting as an
implicit negative term. "BYOL works even without batch statistics" (Richemond et al.,
arXiv:2010.10241, Sec. 3) replaces every BN by GroupNorm [Wu & He, arXiv:1803.08494] combined
with Weight Standardisation [Qiao et al., arXiv:1903.10520] of the layer before it, and keeps
most of the accuracy (73.9% vs 74.3% linear top-1 on ImageNet, ResNet-50). Neither GN nor WS
looks at another image of the batch.

- :class:`WSConv2d` / :class:`WSLinear`: the layer's weight, standardised per output channel
  (mean 0, std 1 over its fan-in) in every forward; the stored parameter is unchanged, so the
  state-dict keys are those of ``nn.Conv2d`` / ``nn.Linear``.
- :func:`group_norm`: GroupNorm with :func:`num_groups` groups.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: GroupNorm's default group count [Wu & He, arXiv:1803.08494, Sec. 4: G = 32].
MAX_GROUPS = 32
#: Channels per group at least: a group of one channel of a ``(B, C)`` feature is a single
#: number, which GroupNorm would map to its bias whatever the input.
MIN_GROUP_SIZE = 2


def standardize_weight(weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``(w - mean) / sqrt(var + eps)`` per output channel (dim 0), over all other dims.

    [Qiao et al., arXiv:1903.10520, Eq. 5-6]; the (biased) variance of the fan-in.
    """
    dims = tuple(range(1, weight.dim()))
    var, mean = torch.var_mean(weight, dim=dims, keepdim=True, correction=0)
    return (weight - mean) * torch.rsqrt(var + eps)


class WSConv2d(nn.Conv2d):
    """A convolution whose weight is standardised per output channel in every forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve with the standardised weight."""
        return self._conv_forward(x, standardize_weight(self.weight), self.bias)


class WSLinear(nn.Linear):
    """A linear layer whose weight is standardised per output unit in every forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the standardised weight."""
        return F.linear(x, standardize_weight(self.weight), self.bias)


def num_groups(channels: int, max_groups: int = MAX_GROUPS) -> int:
    """The most groups (at most ``max_groups``) that split ``channels`` evenly.

    Each group holds at least :data:`MIN_GROUP_SIZE` channels: 32 groups for the usual widths,
    fewer for narrow layers (16 channels: 8 groups of 2), 1 when ``channels`` is too small to
    split.
    """
    for groups in range(min(max_groups, channels // MIN_GROUP_SIZE), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


def group_norm(channels: int, affine: bool = True) -> nn.GroupNorm:
    """GroupNorm over ``channels`` with :func:`num_groups` groups.

    Works on ``(B, C)`` and ``(B, C, H, W)``.
    """
    return nn.GroupNorm(num_groups(channels), channels, affine=affine)


def weight_standardize_convs(module: nn.Module) -> int:
    """Turn every plain ``nn.Conv2d`` in ``module`` into a :class:`WSConv2d`, in place.

    The class is swapped, not the module: parameters, initialisation and state-dict keys stay
    (torchvision's ResNet builds its convolutions itself; this keeps its key names). Returns the
    number of convolutions converted.
    """
    n = 0
    for m in module.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = WSConv2d
            n += 1
    return n
