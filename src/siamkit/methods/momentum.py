"""Momentum (EMA) targets: the state MoCo, BYOL and the moving-average SimSiam variant keep.

The target network is a frozen copy of the online network that follows it by an exponential
moving average, updated by an explicit call once per step (never inside ``forward``):

    xi <- m * xi + (1 - m) * theta          [BYOL, arXiv:2006.07733, Sec. 3.1; MoCo, Eq. 2]
"""

from __future__ import annotations

import copy
import math
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def momentum_copy(online: M) -> M:
    """A frozen deep copy of ``online`` to serve as its EMA target (no gradients, ever).

    The copy has the type of ``online``: the copy of an :class:`~siamkit.encoders.Encoder` is an
    ``Encoder``, so ``target.forward_features`` is typed.
    """
    target = copy.deepcopy(online)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def update_ema(target: nn.Module, online: nn.Module, m: float) -> None:
    """``target <- m * target + (1 - m) * online`` for parameters.

    Buffers (BN statistics) are copied, as in the BYOL and MoCo reference code.
    """
    for t_param, o_param in zip(target.parameters(), online.parameters(), strict=True):
        t_param.lerp_(o_param.detach(), 1.0 - m)
    for t_buf, o_buf in zip(target.buffers(), online.buffers(), strict=True):
        t_buf.copy_(o_buf)


def cosine_momentum(progress: float, base: float, final: float = 1.0) -> float:
    """BYOL's schedule: ``final - (final - base) * (cos(pi * progress) + 1) / 2``.

    Rises from ``base`` at ``progress`` 0 to ``final`` at 1 [BYOL, Sec. 3.2: tau_base 0.996 -> 1];
    also MoCo v3's schedule [arXiv:2104.02057, Sec. 4: 0.99 -> 1].
    """
    progress = min(max(progress, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2
