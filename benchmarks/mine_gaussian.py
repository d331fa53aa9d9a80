"""MINE, MINE-f and InfoNCE against known mutual information (arXiv:1801.04062, Sec. 4.1, Fig. 1).

Correlated Gaussians: ``x ~ N(0, I_d)`` and ``z = rho x + sqrt(1 - rho^2) e`` with ``e ~ N(0, I_d)``
independent, so every coordinate pair has correlation ``rho`` and ``I(X; Z) = -d/2 log(1 - rho^2)``
(d = 2 and 20, rho from -0.99 to 0.99). Non-linear dependence (Sec. 4.1, Fig. 2):
``y = f(x) + sigma e`` with scalar ``x ~ U(-1, 1)`` and ``f`` the identity, ``x^3`` or ``sin(x)``;
there ``I(X; Y) = h(Y) - 1/2 log(2 pi e sigma^2)``, ``h(Y)`` integrated numerically on a grid. MI
is not invariant to ``f`` here (``f`` changes the spread of ``f(x)`` against the noise), so each
case has its own truth; an equitable estimator tracks each of them.

Every estimator trains the same statistics network (one hidden layer of 256 ELU units, Adam
lr 1e-3, batch 64, fresh samples each step, 1000 steps) and is read on 4,000 held-out pairs
(InfoNCE on batches of 64, so it cannot exceed log 64 = 4.16 nats).

    .venv/bin/python benchmarks/mine_gaussian.py               # the whole grid, 3 seeds
    .venv/bin/python benchmarks/mine_gaussian.py --quick       # a subset, under two minutes
    .venv/bin/python benchmarks/mine_gaussian.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from siamkit.eval.mutual_information import FitSettings, Sampler, fit
from siamkit.runtime import machine_summary

ESTIMATORS = ("mine", "mine_f", "infonce")
RHOS = (-0.99, -0.9, -0.5, 0.0, 0.3, 0.5, 0.9)
FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "x": lambda x: x,
    "x^3": lambda x: x**3,
    "sin(x)": torch.sin,
}


def gaussian_mi(dim: int, rho: float) -> float:
    """``-d/2 log(1 - rho^2)``."""
    return -dim / 2 * math.log(1 - rho**2)


def gaussian_sampler(dim: int, rho: float) -> Sampler:
    def sample(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, dim, generator=g)
        z = rho * x + math.sqrt(1 - rho**2) * torch.randn(n, dim, generator=g)
        return x, z

    return sample


def noisy_sampler(f: Callable[[torch.Tensor], torch.Tensor], sigma: float) -> Sampler:
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


def run(sampler: Sampler, settings: FitSettings, seeds: int, n_test: int) -> dict[str, list[float]]:
    """Each estimator's held-out estimates, one per seed (InfoNCE: one seed, see :func:`main`)."""
    test = sampler(n_test, torch.Generator().manual_seed(10_000))
    return {
        bound: [
            fit(sampler, test, replace(settings, bound=bound), seed=s).value  # type: ignore[arg-type]
            for s in range(1 if bound == "infonce" else seeds)
        ]
        for bound in ESTIMATORS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a subset of the grid, one seed")
    parser.add_argument(
        "--seeds",
        type=int,
        default=2,
        help="seeds of MINE and MINE-f (their spread is compared); InfoNCE, 10x slower as it "
        "scores all B x B pairs, runs one",
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--json", help="write the records here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small networks: a second thread only spins
    rhos = (0.5, 0.9) if args.quick else RHOS
    dims = (2, 20)
    seeds = 1 if args.quick else args.seeds
    # One hidden layer: InfoNCE scores all B x B pairs, and a second layer would cost B^2 H^2.
    settings = FitSettings(
        steps=200 if args.quick else args.steps,
        batch_size=64,
        lr=1e-3,
        hidden_dim=256,
        depth=1,
        eval_every=100,
    )
    print(f"machine: {machine_summary()}")
    print(
        f"statistics network: {settings.depth} x {settings.hidden_dim} ELU, Adam lr {settings.lr}, "
        f"batch {settings.batch_size}, {settings.steps} steps, {seeds} seed(s); "
        f"InfoNCE capped at log {settings.batch_size} = {math.log(settings.batch_size):.2f}"
    )
    print(f"{'case':>22} {'true MI':>8} " + " ".join(f"{e:>16}" for e in ESTIMATORS))
    records = []
    start = time.perf_counter()
    cases: list[tuple[str, dict[str, object], Sampler, float]] = [
        (f"d={d} rho={rho:+.2f}", {"dim": d, "rho": rho}, gaussian_sampler(d, rho),
         gaussian_mi(d, rho))
        for d in dims for rho in rhos
    ]  # fmt: skip
    for fname in ("x^3",) if args.quick else tuple(FUNCTIONS):
        for sigma in (0.5,):
            f = FUNCTIONS[fname]
            key = {"function": fname, "sigma": sigma}
            cases.append((f"y={fname}+{sigma}e", key, noisy_sampler(f, sigma), noisy_mi(f, sigma)))
    for label, key, sampler, true_mi in cases:
        est = run(sampler, settings, seeds, 4000)
        cells = []
        for e in ESTIMATORS:
            mean = statistics.fmean(est[e])
            spread = statistics.stdev(est[e]) if len(est[e]) > 1 else 0.0
            cells.append(f"{mean:7.3f} +- {spread:5.3f}")
        print(f"{label:>22} {true_mi:8.3f} " + " ".join(f"{c:>16}" for c in cells), flush=True)
        means = {e: statistics.fmean(v) for e, v in est.items()}
        spreads = {e: statistics.stdev(v) if len(v) > 1 else 0.0 for e, v in est.items()}
        records.append({**key, "true_mi": true_mi, "estimates": means, "spread": spreads,
                        "runs": est})  # fmt: skip
    print(f"total {time.perf_counter() - start:.0f} s")
    within = [r for r in records if "dim" in r and 0 < float(r["true_mi"]) <= 2]  # type: ignore[arg-type]
    for e in ESTIMATORS:
        errors = [abs(r["estimates"][e] - r["true_mi"]) / r["true_mi"] for r in within]  # type: ignore[index,operator]
        print(f"{e:>8}: worst relative error where 0 < true MI <= 2 nats: {max(errors):.1%} "
              f"(mean {np.mean(errors):.1%}, {len(errors)} cases)")  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(records, fh, indent=1)


if __name__ == "__main__":
    main()
