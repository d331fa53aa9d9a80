"""Lower bounds on mutual information from a statistics network: MINE, MINE-f and InfoNCE.

MINE (Belghazi et al., arXiv:1801.04062) estimates ``I(X; Z) = KL(P_XZ || P_X (x) P_Z)`` with a
network ``T`` and a dual representation of the KL divergence. Samples of the joint ``P_XZ`` are
the pairs ``(x[i], z[i])`` of a batch; samples of the product of the marginals pair each ``x[i]``
with the ``z`` of *another* element of the batch (:func:`derangement`, never itself).

Contract of the bounds: scores in, a scalar bound out (in nats, float32); maximise it to train
``T`` (a loss is ``-bound``).

- :func:`dv_bound`: the Donsker-Varadhan bound ``E_P[T] - log E_Q[e^T]`` (Sec. 3.1, Eq. 2).
- :func:`mine_bound`: the same value with MINE's bias-corrected gradient (Sec. 3.2,
  Algorithm 1): the ``E_Q[e^T]`` of the gradient's denominator is a moving average over
  batches instead of the batch's own mean, whose ratio estimate is biased.
- :func:`mine_f_bound`: the f-divergence bound ``E_P[T] - E_Q[e^(T-1)]`` (Sec. 3.1, MINE-f),
  looser than DV for the same ``T`` but unbiased in the batch.
- :func:`infonce_bound`: ``log B + mean_i log softmax_j T(x_i, z_j)[i]`` over all ``B * B``
  pairs (van den Oord et al., arXiv:1807.03748; the bound of SimCLR's NT-Xent); it can never
  exceed ``log B``.

:class:`MutualInformation` is the thin module with state: the statistics network and the moving
average. Under DDP each process estimates on its own batch and keeps its own average (nothing is
gathered).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import nn

from siamkit.heads.statistics import StatisticsNetwork

Bound = Literal["mine", "dv", "mine_f", "infonce"]
BOUNDS: tuple[str, ...] = get_args(Bound)


def cyclic_pairings(
    n: int, k: int, generator: torch.Generator | None = None, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """``k`` fixed-point-free permutations of ``range(n)``, each element meeting ``k`` others.

    ``(k, n)``: row ``s - 1`` is the shift by ``s`` along one random cycle.

    A random cyclic order ``c`` of the batch sends each element ``s`` places on in the cycle,
    ``idx[c[j]] = c[j + s]``; for ``1 <= s < n`` no element lands on itself, and different
    shifts give each element different partners.
    """
    if n < 2:
        raise ValueError(
            f"samples of the product of the marginals need a batch of at least 2, got {n}"
        )
    if not 1 <= k < n:
        raise ValueError(f"a batch of {n} has 1 to {n - 1} pairings without fixed points, not {k}")
    cycle = torch.randperm(n, generator=generator).to(device)
    idx = torch.empty(k, n, dtype=cycle.dtype, device=cycle.device)
    for shift in range(1, k + 1):
        idx[shift - 1, cycle] = cycle.roll(-shift)
    return idx


def derangement(
    n: int, generator: torch.Generator | None = None, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """A random permutation of ``range(n)`` without fixed points: ``idx[i] != i`` for all ``i``.

    The first of :func:`cyclic_pairings`: each element goes to its successor in a random cycle.
    """
    return cyclic_pairings(n, 1, generator, device)[0]


def _log_mean_exp(t: torch.Tensor) -> torch.Tensor:
    """``log mean(exp(t))`` of a ``(B,)`` tensor, without overflow."""
    return torch.logsumexp(t.float(), dim=0) - math.log(t.numel())


def dv_bound(t_joint: torch.Tensor, t_marginal: torch.Tensor) -> torch.Tensor:
    """Donsker-Varadhan bound ``E_P[T] - log E_Q[e^T]`` from ``(B,)`` scores of each kind."""
    return t_joint.float().mean() - _log_mean_exp(t_marginal)


def mine_f_bound(t_joint: torch.Tensor, t_marginal: torch.Tensor) -> torch.Tensor:
    """f-divergence bound ``E_P[T] - E_Q[e^(T - 1)]`` from ``(B,)`` scores of each kind."""
    return t_joint.float().mean() - torch.exp(t_marginal.float() - 1).mean()


def update_log_moving_average(
    log_average: torch.Tensor | None, t_marginal: torch.Tensor, rate: float
) -> torch.Tensor:
    """The moving average of ``E_Q[e^T]`` after one more batch, kept as its logarithm.

    ``a <- (1 - rate) a + rate * mean(e^T)`` (Algorithm 1), computed as a log-sum-exp so that large
    scores do not overflow; the first batch starts the average at its own mean. Detached.
    """
    batch = _log_mean_exp(t_marginal.detach())
    if log_average is None:
        return batch
    # NaN (no batch yet) selects the batch; torch.where keeps this free of a device-host sync.
    moved = torch.logaddexp(log_average + math.log1p(-rate), batch + math.log(rate))
    return torch.where(torch.isfinite(log_average), moved, batch)


def mine_bound(
    t_joint: torch.Tensor, t_marginal: torch.Tensor, log_average: torch.Tensor
) -> torch.Tensor:
    """The DV bound's value with MINE's bias-corrected gradient.

    The DV gradient is ``E_P[dT] - E_Q[e^T dT] / E_Q[e^T]``; Algorithm 1 puts a moving average
    ``a`` of ``E_Q[e^T]`` (``log_average``, e.g. from :func:`update_log_moving_average`) in the
    denominator. The surrogate ``E_P[T] - E_Q[e^T] / a`` (``a`` a constant) has exactly that
    gradient; the returned tensor has the surrogate's gradient and the DV bound's value.
    """
    surrogate = t_joint.float().mean() - torch.exp(t_marginal.float() - log_average.detach()).mean()
    value = dv_bound(t_joint, t_marginal).detach()
    return value + (surrogate - surrogate.detach())


def infonce_bound(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE bound from the ``(B, B)`` scores ``T(x_i, z_j)``; joint pairs on the diagonal.

    ``log B + mean_i [T_ii - log sum_j e^(T_ij)]``: at most ``log B``, whatever the true MI.
    """
    scores = scores.float()
    n = scores.shape[0]
    return math.log(n) + (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean()


class MutualInformation(nn.Module):
    """A lower bound on ``I(X; Z)`` from a statistics network, and the state the bound needs.

    Args:
        critic: The statistics network ``T(x, z)``.
        bound: ``mine`` (DV bound, bias-corrected gradient), ``dv`` (DV bound, the batch's own
            gradient), ``mine_f`` or ``infonce``; see the module docstring.
        ema_rate: Rate of the moving average of ``E_Q[e^T]`` for ``mine``. Algorithm 1 of the
            paper leaves the rate open; 0.01 averages over about the last 100 batches.
    """

    def __init__(
        self, critic: StatisticsNetwork, bound: Bound = "mine", ema_rate: float = 0.01
    ) -> None:
        super().__init__()
        if bound not in BOUNDS:
            raise ValueError(f"unknown bound {bound!r}; use one of {', '.join(BOUNDS)}")
        if not 0.0 < ema_rate <= 1.0:
            raise ValueError(f"ema_rate must be in (0, 1], got {ema_rate}")
        self.critic = critic
        self.bound = bound
        self.ema_rate = ema_rate
        # log of the moving average of E_Q[e^T]; NaN until the first training batch.
        self.log_average: torch.Tensor
        self.register_buffer("log_average", torch.tensor(float("nan")))

    def forward(
        self, x: torch.Tensor, z: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The bound on the joint pairs ``(x[i], z[i])``: ``(B, Dx)``, ``(B, Dz)`` -> scalar.

        In training mode ``mine`` first folds this batch into the moving average.
        """
        if self.bound == "infonce":
            return infonce_bound(self.critic.pairwise(x, z))
        t_joint = self.critic(x, z)  # (B,)
        t_marginal = self.critic(x, z[derangement(z.shape[0], generator, z.device)])  # (B,)
        if self.bound == "mine_f":
            return mine_f_bound(t_joint, t_marginal)
        if self.bound == "dv":
            return dv_bound(t_joint, t_marginal)
        if self.training:
            self.log_average = update_log_moving_average(
                self.log_average, t_marginal, self.ema_rate
            )
        # Before any training batch (eval mode), the batch's own mean; no device-host sync.
        own = _log_mean_exp(t_marginal.detach())
        log_average = torch.where(torch.isfinite(self.log_average), self.log_average, own)
        return mine_bound(t_joint, t_marginal, log_average)


__all__ = [
    "BOUNDS",
    "Bound",
    "MutualInformation",
    "cyclic_pairings",
    "derangement",
    "dv_bound",
    "infonce_bound",
    "mine_bound",
    "mine_f_bound",
    "update_log_moving_average",
]
