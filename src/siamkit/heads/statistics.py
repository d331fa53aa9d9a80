"""The statistics network of MINE: a scalar score ``T(x, z)`` for a pair of samples.

MINE (Belghazi et al., arXiv:1801.04062, Sec. 3) bounds the mutual information ``I(X; Z)`` from
below by the expected score of joint pairs against the (log-)expected exponentiated score of
pairs from the product of the marginals; ``T`` is any network of the concatenated pair.

The first layer of an MLP on ``[x, z]`` is ``W_x x + W_z z + b``: splitting it in two lets
:meth:`StatisticsNetwork.pairwise` score all ``B * B`` pairs of a batch (what the InfoNCE bound
needs) from ``B`` projections of each side instead of ``B * B`` concatenations.

There is no BatchNorm: the joint and the marginal pairs are scored in separate calls, and
normalising each set by its own statistics would remove the very difference the bound measures.
"""

from __future__ import annotations

import torch
from torch import nn


class StatisticsNetwork(nn.Module):
    """``T(x, z)``: an MLP with ELU activations on the concatenated pair.

    Args:
        x_dim: Width of ``x``.
        z_dim: Width of ``z``.
        hidden_dim: Width of every hidden layer.
        depth: Number of hidden layers (at least 1).
        output_bias: A bias on the score. The Donsker-Varadhan and InfoNCE bounds do not change
            when a constant is added to ``T``, so for them the bias carries nothing, while
            MINE's bias-corrected gradient (``1 - E_Q[e^T] / a`` for it, ``a`` the lagging
            moving average) still moves it; MINE-f's bound does depend on it.
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        hidden_dim: int = 256,
        depth: int = 2,
        output_bias: bool = True,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"a statistics network needs at least one hidden layer, got {depth}")
        # The first layer of the MLP on [x, z], split by input: W [x; z] + b = W_x x + W_z z + b.
        self.x_in = nn.Linear(x_dim, hidden_dim)
        self.z_in = nn.Linear(z_dim, hidden_dim, bias=False)
        layers: list[nn.Module] = [nn.ELU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.ELU()]
        layers.append(nn.Linear(hidden_dim, 1, bias=output_bias))
        self.rest = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Scores of the pairs ``(x[i], z[i])``: ``(B, x_dim)``, ``(B, z_dim)`` -> ``(B,)``."""
        return self.rest(self.x_in(x) + self.z_in(z)).squeeze(-1)

    def pairwise(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Scores of every pair ``(x[i], z[j])``: ``(B, x_dim)``, ``(C, z_dim)`` -> ``(B, C)``."""
        hidden = self.x_in(x)[:, None, :] + self.z_in(z)[None, :, :]  # (B, C, H)
        return self.rest(hidden).squeeze(-1)


__all__ = ["StatisticsNetwork"]
