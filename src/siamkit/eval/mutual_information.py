"""Mutual information by MINE: fit a statistics network, read its bound on held-out pairs.

The estimate of ``I(X; Z)`` from samples is the bound of :mod:`siamkit.losses.mutual_information`
reached by a statistics network trained on one part of the pairs (fresh samples each step when a
sampler can draw them, as for the Gaussians of arXiv:1801.04062, Sec. 4.1) and evaluated on pairs it
has not seen: a network that memorised its training pairs would otherwise report more information
than there is. The held-out bound is read every ``eval_every`` steps and the best reading is the
estimate (early stopping; with finite data the bound on training pairs keeps rising while the
held-out one falls).

For representations the pairs are the features of two augmented views of the same images (h of
one view against h of the other, and likewise g(h)), or h against the one-hot label.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from siamkit.heads.statistics import StatisticsNetwork
from siamkit.losses.mutual_information import (
    Bound,
    MutualInformation,
    cyclic_pairings,
    dv_bound,
    mine_f_bound,
)

#: Draws ``n`` joint pairs ``(x, z)``: ``(n, Dx)``, ``(n, Dz)``.
Sampler = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class FitSettings:
    """How a statistics network is trained for an estimate.

    The defaults suit a few thousand pairs of representations, where a larger network or step
    overfits within a hundred steps (the held-out bound then falls below zero); with fresh
    samples every step (the Gaussian benchmark) a deeper network and a larger step converge
    faster.

    Attributes:
        bound: ``mine``, ``dv``, ``mine_f`` or ``infonce``.
        steps: Adam steps.
        batch_size: Pairs per step; InfoNCE cannot exceed its log.
        lr: Adam's learning rate.
        hidden_dim: Width of the statistics network's hidden layers.
        depth: Its number of hidden layers.
        ema_rate: Moving-average rate of the ``mine`` bound.
        eval_every: Steps between readings of the held-out bound.
    """

    bound: Bound = "mine"
    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-4
    hidden_dim: int = 256
    depth: int = 1
    ema_rate: float = 0.01
    eval_every: int = 25


@dataclass
class Estimate:
    """A fitted estimate.

    Attributes:
        value: The best held-out bound, in nats.
        history: ``(step, held-out bound)`` at every reading.
    """

    value: float
    history: list[tuple[int, float]] = field(default_factory=list)


#: Marginal pairings of each held-out ``x`` when the bound is read (at most ``N - 1``).
HELD_OUT_PAIRINGS = 16


@torch.no_grad()
def held_out_bound(
    estimator: MutualInformation, x: torch.Tensor, z: torch.Tensor, batch_size: int, seed: int = 0
) -> float:
    """The bound on held-out pairs, in eval mode.

    The DV and f bounds are read on all ``N`` joint pairs at once against ``K * N`` marginal
    pairs: ``K`` shifts ``1..K`` along one random cycle of the pairs, each a permutation without
    fixed points, so every ``x`` meets ``K`` different other ``z`` (``K`` =
    :data:`HELD_OUT_PAIRINGS`; one pairing would leave ``log E_Q[e^T]`` to a few large scores).
    InfoNCE, whose value depends on the batch size, is read on batches of ``batch_size``.
    """
    was_training = estimator.training
    estimator.eval()
    critic = estimator.critic
    if estimator.bound == "infonce":
        n = x.shape[0] // batch_size * batch_size
        values = [
            estimator(xb, zb)
            for xb, zb in zip(x[:n].split(batch_size), z[:n].split(batch_size), strict=True)
        ]
        value = torch.stack(values).mean().item()
    else:
        n = x.shape[0]
        pairings = cyclic_pairings(
            n, min(HELD_OUT_PAIRINGS, n - 1), torch.Generator().manual_seed(seed)
        )
        t_joint = critic(x, z)  # (N,)
        t_marginal = [critic(x, z[idx]) for idx in pairings]  # K x (N,)
        bound = mine_f_bound if estimator.bound == "mine_f" else dv_bound
        value = bound(t_joint, torch.cat(t_marginal)).item()  # (N,) against (K * N,)
    estimator.train(was_training)
    return value


def fit(
    sample: Sampler,
    test: tuple[torch.Tensor, torch.Tensor],
    settings: FitSettings | None = None,
    seed: int = 0,
) -> Estimate:
    """Train a statistics network on pairs from ``sample`` and read the bound on ``test``.

    Args:
        sample: Draws training pairs (:data:`Sampler`).
        test: Held-out pairs ``(x, z)``, ``(N, Dx)`` and ``(N, Dz)``.
        settings: Network and training settings (default :class:`FitSettings`).
        seed: Seed of the network's initialisation, of the samples and of the marginal pairings.

    Returns:
        The best held-out reading and all readings.
    """
    settings = settings or FitSettings()
    x_test, z_test = test
    torch.manual_seed(seed)
    critic = StatisticsNetwork(
        x_test.shape[1], z_test.shape[1], settings.hidden_dim, settings.depth
    )
    estimator = MutualInformation(critic, settings.bound, settings.ema_rate)
    optimiser = torch.optim.Adam(estimator.parameters(), lr=settings.lr)
    g = torch.Generator().manual_seed(seed)
    history: list[tuple[int, float]] = []
    for step in range(1, settings.steps + 1):
        x, z = sample(settings.batch_size, g)
        loss = -estimator(x, z, g)  # maximise the bound
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % settings.eval_every == 0 or step == settings.steps:
            history.append(
                (step, held_out_bound(estimator, x_test, z_test, settings.batch_size, seed))
            )
    finite = [v for _, v in history if math.isfinite(v)]
    return Estimate(max(finite) if finite else float("nan"), history)


def pair_sampler(x: torch.Tensor, z: torch.Tensor) -> Sampler:
    """A sampler of random batches (without replacement within a batch) of fixed pairs."""

    def sample(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(x.shape[0], generator=g)[: min(n, x.shape[0])]
        return x[idx], z[idx]

    return sample


def standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets standardised per dimension with the training set's mean and std.

    Mutual information is unchanged by invertible maps of each variable; the statistics network
    trains faster on inputs of unit scale.
    """
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def estimate_from_pairs(
    x: torch.Tensor,
    z: torch.Tensor,
    settings: FitSettings | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Estimate:
    """``I(X; Z)`` from ``N`` fixed pairs: fit on a random part of them, read the bound on the rest.

    Args:
        x: ``(N, Dx)``.
        z: ``(N, Dz)``, paired with ``x`` row by row.
        settings: Network and training settings (default :class:`FitSettings`).
        test_fraction: Share of pairs held out.
        seed: Seed of the split and of :func:`fit`.
    """
    n = x.shape[0]
    n_test = max(2, round(n * test_fraction))
    if n - n_test < 2:
        raise ValueError(f"need at least 4 pairs to fit and hold out, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    tr, te = perm[n_test:], perm[:n_test]
    x_tr, x_te = standardise(x[tr].float(), x[te].float())
    z_tr, z_te = standardise(z[tr].float(), z[te].float())
    return fit(pair_sampler(x_tr, z_tr), (x_te, z_te), settings, seed)


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    """``(N,)`` integer labels -> ``(N, C)`` float one-hot, ``C`` the number of classes seen."""
    return F.one_hot(labels.long(), int(labels.max()) + 1).float()


__all__ = [
    "Estimate",
    "FitSettings",
    "Sampler",
    "estimate_from_pairs",
    "fit",
    "held_out_bound",
    "one_hot",
    "pair_sampler",
    "standardise",
]
