"""Pairs of known mutual information, to check MI estimators against the truth.

From MINE's validation (Belghazi et al., arXiv:1801.04062, Sec. 4.1):

- correlated Gaussians: ``x ~ N(0, I_d)`` and ``z = rho x + sqrt(1 - rho^2) e`` with
  ``e ~ N(0, I_d)`` independent, so every coordinate pair has correlation ``rho`` and
  ``I(X; Z) = -d/2 log(1 - rho^2)``;
- a non-linear dependence ``y = f(x) + sigma e`` with scalar ``x ~ U(-1, 1)``, where
  ``I(X; Y) = h(Y) - 1/2 log(2 pi e sigma^2)`` and ``h(Y)`` is integrated numerically on a grid.
  MI is not invariant to ``f`` here (``f`` changes the spread of ``f(x)`` against the noise), so
  each ``f`` has its own truth.

Every estimate (:func:`estimates`) trains on fresh samples, chooses its stopping step on
validation pairs that :func:`siamkit.eval.mi_estimator.fit` draws from the same sampler with
their own seed, and reports the bound on :data:`HELD_OUT_PAIRS` test pairs drawn with another
fixed seed, which no choice sees (the maximum over readings on the reported pairs would be biased
upward: see :mod:`siamkit.eval.mi_estimator`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from siamkit.eval.mi_estimator import FitSettings, Sampler, fit
from siamkit.losses.mi_bounds import Bound

#: Test pairs every estimate is reported on (drawn with the seed ``TEST_SEED + seed`` of its
#: fit); :func:`~siamkit.eval.mi_estimator.fit` draws as many validation
#: pairs with the seed ``VALIDATION_SEED + seed`` of each fit.
HELD_OUT_PAIRS = 4000

#: Seed of the test pairs of the fit with seed 0 (seed ``s``: ``TEST_SEED + s``).
TEST_SEED = 10_000

#: The non-linear dependences of the validation, by name.
FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "x": lambda x: x,
    "x^3": lambda x: x**3,
    "sin(x)": torch.sin,
}


def gaussian_mi(dim: int, rho: float) -> float:
    """``-d/2 log(1 - rho^2)`` nats."""
    return -dim / 2 * math.log(1 - rho**2)


def gaussian_sampler(dim: int, rho: float) -> Sampler:
    """Draws ``n`` pairs ``(x, z)`` of ``dim``-dimensional Gaussians correlated by ``rho``."""

    def sample(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, dim, generator=g)
        z = rho * x + math.sqrt(1 - rho**2) * torch.randn(n, dim, generator=g)
        return x, z

    return sample


def noisy_sampler(f: Callable[[torch.Tensor], torch.Tensor], sigma: float) -> Sampler:
    """Draws ``n`` pairs ``(x, f(x) + sigma e)`` with ``x ~ U(-1, 1)``, each ``(n, 1)``."""

    def sample(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(n, 1, generator=g) * 2 - 1
        return x, f(x) + sigma * torch.randn(n, 1, generator=g)

    return sample


def noisy_mi(f: Callable[[torch.Tensor], torch.Tensor], sigma: float) -> float:
    """``h(Y) - h(Y | X)`` for ``Y = f(X) + sigma e``, the density of ``Y`` integrated on a grid."""
    x = torch.linspace(-1, 1, 8001, dtype=torch.float64)
    px = torch.full_like(x, 1 / x.numel())  # U(-1, 1): equal weights on the grid
    fx = f(x)
    y = torch.linspace(
        float(fx.min()) - 8 * sigma, float(fx.max()) + 8 * sigma, 8001, dtype=torch.float64
    )
    py = torch.zeros_like(y)
    for chunk in range(0, x.numel(), 500):  # p(y) = sum_x p(x) N(y; f(x), sigma^2)
        d = (y[None, :] - fx[chunk : chunk + 500, None]) / sigma
        py += (px[chunk : chunk + 500, None] * torch.exp(-(d**2) / 2)).sum(0)
    py /= sigma * math.sqrt(2 * math.pi)
    dy = float(y[1] - y[0])
    h_y = -float((py * torch.log(py.clamp_min(1e-300))).sum()) * dy
    return h_y - 0.5 * math.log(2 * math.pi * math.e * sigma**2)


def validation_settings(bound: Bound, steps: int, batch_size: int) -> FitSettings:
    """The statistics network and its training for pairs of known MI.

    One hidden layer of 256 ELU units (InfoNCE scores all ``B x B`` pairs, and a second layer
    would cost ``B^2 H^2``), Adam lr 1e-3, fresh samples every step, the held-out bound read
    every 100 steps.
    """
    return FitSettings(
        bound=bound, steps=steps, batch_size=batch_size, lr=1e-3, hidden_dim=256, depth=1,
        eval_every=100,
    )  # fmt: skip


def estimates(sampler: Sampler, settings: FitSettings, seeds: int) -> list[float]:
    """Test estimates of ``I(X; Z)`` for seeds ``0..seeds-1``, each on its own test pairs.

    Each fit ``s`` chooses its step on its own validation pairs (seed ``VALIDATION_SEED + s``,
    :func:`~siamkit.eval.mi_estimator.fit`) and reports the bound on the
    :data:`HELD_OUT_PAIRS` test pairs of seed ``TEST_SEED + s`` at that step.
    """
    return [estimate(sampler, settings, s) for s in range(seeds)]


def estimate(sampler: Sampler, settings: FitSettings, seed: int) -> float:
    """The test estimate of ``I(X; Z)`` of the fit with ``seed`` (one of :func:`estimates`)."""
    # Each seed draws its own test pairs: the spread over seeds then holds the test sample's
    # error too, which a claim against the truth must see.
    test = sampler(HELD_OUT_PAIRS, torch.Generator().manual_seed(TEST_SEED + seed))
    return fit(sampler, test, settings, seed=seed).value


__all__ = [
    "FUNCTIONS",
    "HELD_OUT_PAIRS",
    "TEST_SEED",
    "estimate",
    "estimates",
    "gaussian_mi",
    "gaussian_sampler",
    "noisy_mi",
    "noisy_sampler",
    "validation_settings",
]
