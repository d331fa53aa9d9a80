"""MINE against mode dropping: a 2-D GAN on 25 Gaussians (arXiv:1801.04062, Sec. 5.1).

The paper's objective: the generator's input is ``[eps, c]`` (noise ``eps`` and a code ``c``), and
its loss adds a mutual-information term to the GAN loss,
``L_G = -E[log D(G([eps, c]))] - beta * I(G([eps, c]); c)`` (the non-saturating GAN loss here),
with ``I`` estimated by MINE: a statistics network ``T(x = G output, z = c)`` ascends the bound
while the generator ascends ``beta * bound`` through its output. The bound is siamkit's
:class:`~siamkit.losses.mi_bounds.MutualInformation` (``bound="mine"``, bias-corrected
gradient); nothing here reimplements it.

The rest are this benchmark's own choices (the paper's details could not be retrieved):

- data: 25 Gaussians with means on ``{-4, -2, 0, 2, 4}^2`` and std 0.05, equal weights (a grid
  common in the mode-dropping literature);
- ``eps`` and ``c`` are each 2-d standard normal (10-d inputs learned more slowly); G and D are
  MLPs with 2 hidden layers of 128 ReLU units, T has 1 hidden layer of 128 ELU units; Adam with
  betas (0.5, 0.999) and lr 3e-3 for all three (at 1e-3 the GAN was still a blur after 3,000
  steps), batch 256, ``beta = 1``, 3,000 steps (about 25 s a GAN run and 35 s a MINE run on one
  core); the vanilla GAN is the same model with ``beta = 0``. Chosen in short tuning runs, early
  ones on seeds 0-2 with other settings, the last ones on seeds 100-101; there a deeper T (2
  hidden layers) let the MI term dominate at ``beta = 1`` and cost both modes and quality;
- training is short for this grid: at these steps neither variant has converged (many samples
  still lie between modes), so the numbers compare early progress, not final mode coverage;
- evaluation on 2,500 generator samples: a sample is *high-quality* if it lies within 3 std
  (0.15) of its nearest mode's mean; a mode is *captured* if at least 20 of the high-quality
  samples fall in it (a perfect generator puts about 100 in each).

    .venv/bin/python benchmarks/mine_gan.py                  # 5 seeds, both variants
    .venv/bin/python benchmarks/mine_gan.py --quick          # 2 seeds, half the steps
    .venv/bin/python benchmarks/mine_gan.py --beta 0.5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

from siamkit.heads.statistics import StatisticsNetwork
from siamkit.losses.mi_bounds import MutualInformation
from siamkit.runtime import machine_summary

STD = 0.05
MEANS = torch.cartesian_prod(*[torch.arange(-4.0, 5.0, 2.0)] * 2)  # (25, 2)
# See the module docstring for how these were chosen.
NOISE_DIM, CODE_DIM, HIDDEN, DEPTH, T_DEPTH, BATCH, LR = 2, 2, 128, 2, 1, 256, 3e-3
N_EVAL, MIN_HQ = 2500, 20
# Fused Adam (torch >= 2.4 on CPU) takes a third of the time of the loop over parameters.
FUSED = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)


def mlp(d_in: int, d_out: int) -> nn.Sequential:
    """A ReLU MLP with ``DEPTH`` hidden layers of ``HIDDEN`` units."""
    layers: list[nn.Module] = []
    for i in range(DEPTH):
        layers += [nn.Linear(d_in if i == 0 else HIDDEN, HIDDEN), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(HIDDEN, d_out))


def sample_data(n: int) -> torch.Tensor:
    """``n`` points of the 25-Gaussian mixture, modes drawn uniformly."""
    return MEANS[torch.randint(len(MEANS), (n,))] + STD * torch.randn(n, 2)


def sample_inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise ``eps`` ``(n, NOISE_DIM)`` and code ``c`` ``(n, CODE_DIM)``, standard normal."""
    return torch.randn(n, NOISE_DIM), torch.randn(n, CODE_DIM)


def evaluate(generator: nn.Module) -> tuple[int, float]:
    """Modes captured (of 25) and the share of high-quality samples among ``N_EVAL``.

    Args:
        generator: Maps ``[eps, c]`` to a 2-d point.

    Returns:
        The number of modes with at least ``MIN_HQ`` high-quality samples, and the percentage of
        samples within 3 std of their nearest mode's mean.
    """
    with torch.no_grad():
        x = generator(torch.cat(sample_inputs(N_EVAL), dim=1))
    dist, mode = torch.cdist(x, MEANS).min(dim=1)
    good = dist <= 3 * STD
    counts = torch.bincount(mode[good], minlength=len(MEANS))
    return int((counts >= MIN_HQ).sum()), 100.0 * float(good.float().mean())


def train(seed: int, steps: int, beta: float) -> tuple[int, float]:
    """Train one GAN (with the MINE term when ``beta > 0``) and evaluate it.

    Args:
        seed: Seeds torch's global generator (weights, data, noise and MINE's shuffles).
        steps: Generator updates; each follows one discriminator update.
        beta: Weight of the MI term in the generator's loss; 0 is the vanilla GAN.

    Returns:
        What :func:`evaluate` returns.
    """
    torch.manual_seed(seed)  # both variants of a seed start from the same G and D
    gen, disc = mlp(NOISE_DIM + CODE_DIM, 2), mlp(2, 1)
    mi = MutualInformation(StatisticsNetwork(2, CODE_DIM, HIDDEN, depth=T_DEPTH), bound="mine")

    def adam(module: nn.Module) -> torch.optim.Adam:
        return torch.optim.Adam(module.parameters(), lr=LR, betas=(0.5, 0.999), fused=FUSED)

    opt_g, opt_d, opt_t = adam(gen), adam(disc), adam(mi)
    ones, zeros = torch.ones(BATCH), torch.zeros(BATCH)
    for _ in range(steps):
        eps, c = sample_inputs(BATCH)
        fake = gen(torch.cat([eps, c], dim=1))
        # Discriminator: real against a detached fake, so that its step leaves G alone.
        logits = disc(torch.cat([sample_data(BATCH), fake.detach()])).squeeze(-1)
        d_loss = F.binary_cross_entropy_with_logits(logits, torch.cat([ones, zeros]))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        # Generator: non-saturating loss -log D(G(z)) = softplus(-logit), minus beta * MI.
        disc.requires_grad_(False)  # D is only a path to G here: skip its weight gradients
        g_loss = F.softplus(-disc(fake).squeeze(-1)).mean()
        if beta > 0:
            # T ascends the bound and G ascends beta * bound, in one backward pass: the bound
            # sees a copy of the fake batch whose value is the batch and whose gradient is scaled
            # by beta, so T's gradient is -d bound / dT and G's gets -beta * d bound / dG.
            scaled = beta * fake + (1 - beta) * fake.detach()
            g_loss = g_loss - mi(scaled, c)  # one call a step: one update of the moving average
        opt_g.zero_grad(set_to_none=True)
        opt_t.zero_grad(set_to_none=True)
        g_loss.backward()
        disc.requires_grad_(True)
        opt_g.step()
        if beta > 0:
            opt_t.step()
    return evaluate(gen)


def mean_std(values: list[float]) -> str:
    """``mean ± std`` over seeds (std 0 for one seed)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.1f} ± {std:.1f}"


def main() -> None:
    """Run both variants over the seeds, print rows and a Markdown summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3000, help="generator updates per run")
    parser.add_argument("--beta", type=float, default=1.0, help="weight of the MI term")
    parser.add_argument("--json", help="write the records here")
    parser.add_argument(
        "--quick", action="store_true", help="2 seeds, half the steps (a smoke test)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # small MLPs: threads cost more than they save on shared cores
    seeds, steps = (2, args.steps // 2) if args.quick else (args.seeds, args.steps)
    print(f"machine: {machine_summary()}")
    print(f"{steps} steps, batch {BATCH}, beta {args.beta}, {seeds} seed(s)")
    records, start = [], time.perf_counter()
    for seed in range(seeds):
        for use_mine in (False, True):
            t0 = time.perf_counter()
            modes, hq = train(seed, steps, args.beta if use_mine else 0.0)
            name = "MINE-GAN" if use_mine else "GAN"
            print(f"seed {seed} {name:>8}: {modes:2d}/25 modes, {hq:5.1f}% high-quality "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
            records.append({"seed": seed, "mine": use_mine, "modes": modes, "high_quality": hq})
    print(f"total {time.perf_counter() - start:.0f} s\n")
    print("| variant | modes captured (of 25) | per seed | high-quality % |")
    print("|---|---|---|---|")
    for use_mine in (False, True):
        rows = [r for r in records if r["mine"] == use_mine]
        modes = [float(r["modes"]) for r in rows]
        per_seed = ", ".join(str(r["modes"]) for r in rows)
        hq = mean_std([float(r["high_quality"]) for r in rows])
        label = f"GAN + MINE (beta {args.beta})" if use_mine else "GAN"
        print(f"| {label} | {mean_std(modes)} | {per_seed} | {hq} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(records, fh, indent=1)


if __name__ == "__main__":
    main()
