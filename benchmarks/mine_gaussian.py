"""MINE, MINE-f and InfoNCE against known mutual information (arXiv:1801.04062, Sec. 4.1, Fig. 1).

Correlated Gaussians: ``x ~ N(0, I_d)`` and ``z = rho x + sqrt(1 - rho^2) e`` with ``e ~ N(0, I_d)``
independent, so every coordinate pair has correlation ``rho`` and ``I(X; Z) = -d/2 log(1 - rho^2)``
(d = 2 and 20, rho from -0.99 to 0.99). Non-linear dependence (Sec. 4.1, Fig. 2):
``y = f(x) + sigma e`` with scalar ``x ~ U(-1, 1)`` and ``f`` the identity, ``x^3`` or ``sin(x)``;
there ``I(X; Y) = h(Y) - 1/2 log(2 pi e sigma^2)``, ``h(Y)`` integrated numerically on a grid. MI
is not invariant to ``f`` here (``f`` changes the spread of ``f(x)`` against the noise), so each
case has its own truth; an equitable estimator tracks each of them.

Every estimator trains the same statistics network (one hidden layer of 256 ELU units, Adam
lr 1e-3, fresh samples each step, 2000 steps: :func:`siamkit.eval.known_mi.validation_settings`).
Every 100 steps its bound is read on 4,000 validation pairs and on 4,000 test pairs, each drawn
with a seed of its own; the estimate is the test bound at the step of the best validation bound
(:func:`siamkit.eval.known_mi.estimates`), so no choice sees the pairs it is read on. MINE and
MINE-f train on batches of 256 (with 64 and 1000
steps MINE stayed 13% under the truth at 20-d, rho 0.3: 0.82 against 0.94 nats; docs/results.md);
InfoNCE, which scores all B x B pairs of a batch (0.46 s a step at 256 against 0.03 s at 64 on
one core), trains and is read on batches of 64, so it cannot exceed log 64 = 4.16 nats.

    .venv/bin/python benchmarks/mine_gaussian.py               # the whole grid, 2 seeds
    .venv/bin/python benchmarks/mine_gaussian.py --quick       # a smoke test, see QUICK_NOTE
    .venv/bin/python benchmarks/mine_gaussian.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np
import torch

from siamkit.eval.known_mi import (
    FUNCTIONS,
    HELD_OUT_PAIRS,
    estimates,
    gaussian_mi,
    gaussian_sampler,
    noisy_mi,
    noisy_sampler,
    validation_settings,
)
from siamkit.eval.mi_estimator import Sampler
from siamkit.runtime import machine_summary

ESTIMATORS = ("mine", "mine_f", "infonce")
RHOS = (-0.99, -0.9, -0.5, 0.0, 0.3, 0.5, 0.9)

#: What ``--quick`` is, printed before and after its table.
QUICK_NOTE = """\
--quick is a SMOKE TEST, not the accuracy benchmark: 3 cases, one seed, 1000 steps (the full
run: 17 cases, 2 seeds, 2000 steps). It shows that the three estimators train and land near the
truth on two Gaussian cases. It cannot show the 10% target: one seed has no spread, and at half
the steps the 20-d case is still rising. The 1 x 256 network reads y = x^3 + 0.5e well below its
truth at both budgets docs/results.md records (with their commands), so that case's
error is a known limit of the network, not a failure of the run."""


def run(
    sampler: Sampler, steps: int, batch: int, infonce: tuple[int, int], seeds: int
) -> dict[str, list[float]]:
    """Each estimator's held-out estimates, one per seed (InfoNCE: one seed, see :func:`main`).

    ``infonce`` is InfoNCE's ``(steps, batch)``.
    """
    out = {
        bound: estimates(sampler, validation_settings(bound, steps, batch), seeds)
        for bound in ("mine", "mine_f")
    }
    out["infonce"] = estimates(sampler, validation_settings("infonce", *infonce), 1)
    return out


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
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=256, help="MINE's and MINE-f's batch")
    parser.add_argument("--infonce-batch", type=int, default=64, help="InfoNCE's batch")
    parser.add_argument("--json", help="write the records here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small networks: a second thread only spins
    # --quick: the two in-target cases that were hardest (20-d at 0.94 nats, 2-d at 0.29) and
    # one non-linear dependence, with fewer steps.
    grid = [(2, 0.5), (20, 0.3)] if args.quick else [(d, rho) for d in (2, 20) for rho in RHOS]
    seeds = 1 if args.quick else args.seeds
    steps = 1000 if args.quick else args.steps
    infonce = (steps // 2 if args.quick else steps, args.infonce_batch)
    if args.quick:
        print(QUICK_NOTE)
    print(f"machine: {machine_summary()}")
    print(
        f"statistics network: 1 x 256 ELU, Adam lr 1e-3; MINE and MINE-f: batch {args.batch}, "
        f"{steps} steps, {seeds} seed(s); InfoNCE: batch {infonce[1]}, {infonce[0]} steps, "
        f"1 seed, capped at log {infonce[1]} = {math.log(infonce[1]):.2f}; the bound on "
        f"{HELD_OUT_PAIRS} test pairs at the step chosen on {HELD_OUT_PAIRS} validation pairs"
    )
    print(f"{'case':>22} {'true MI':>8} " + " ".join(f"{e:>16}" for e in ESTIMATORS))
    records = []
    start = time.perf_counter()
    cases: list[tuple[str, dict[str, object], Sampler, float]] = [
        (f"d={d} rho={rho:+.2f}", {"dim": d, "rho": rho}, gaussian_sampler(d, rho),
         gaussian_mi(d, rho))
        for d, rho in grid
    ]  # fmt: skip
    for fname in ("x^3",) if args.quick else tuple(FUNCTIONS):
        for sigma in (0.5,):
            f = FUNCTIONS[fname]
            key = {"function": fname, "sigma": sigma}
            cases.append((f"y={fname}+{sigma}e", key, noisy_sampler(f, sigma), noisy_mi(f, sigma)))
    for label, key, sampler, true_mi in cases:
        est = run(sampler, steps, args.batch, infonce, seeds)
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
    moderate = [r for r in records if 0 < float(r["true_mi"]) <= 2]  # type: ignore[arg-type]
    for kind, within in (
        ("Gaussian", [r for r in moderate if "dim" in r]),
        ("non-linear", [r for r in moderate if "function" in r]),
    ):
        for e in ESTIMATORS:
            errors = [abs(r["estimates"][e] - r["true_mi"]) / r["true_mi"] for r in within]  # type: ignore[index]
            print(
                f"{e:>8}: worst relative error, {kind} cases with 0 < true MI <= 2 nats: "
                f"{max(errors):.1%} (mean {np.mean(errors):.1%}, {len(errors)} cases)"
            )
    if args.quick:
        print(QUICK_NOTE)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(records, fh, indent=1)


if __name__ == "__main__":
    main()
