"""Why SimSiam without stop-gradient (or without predictor) collapses slowly on the digits.

Trains ``simsiam/digits`` cells (the cpu scale of the ``simsiam_stop_gradient`` and
``simsiam_predictor`` experiments) under a grid of learning rates and ablations, and measures on
each final checkpoint what the collapse looks like. Per run it prints the settings and steps and:

- ``std_tr``: the training monitor's collapse metric (std of the l2-normalised projection output
  per channel, averaged, x sqrt(d); 1 healthy, 0 collapsed): the mean over the last epoch, which
  is what ``results.json`` and the catalogue's ``collapse_std`` measure hold;
- ``*_tb``: augmented training views through the network in train mode (BN on each batch's
  statistics, batches of the run's size), as training sees them, averaged over the batches:
  ``std_tb`` (the same metric again), ``top1_tb`` (share of the squared singular values of the
  l2-normalised outputs in the largest one: 1 when every output lies on one line through the
  origin), ``abs_cos_tb``/``cos_tb`` (mean |cosine| and cosine between different images);
- ``top_image``: the largest share of a batch's standardised output energy in one image;
  ``minority``: images of a batch on the smaller side of its first principal direction;
  ``std_line``: ``2 sqrt(p (1 - p))`` for that share p, the collapse std of outputs that lie on
  one line through the batch mean (a batch-normalised output cannot be constant: each channel
  keeps batch std |gamma|, so a collapsing network puts most images at one point and a few far
  away, and the std measures how few);
- ``gamma_pred``: ``mean|gamma| / sqrt(mean(gamma^2 + beta^2))`` of the output BN, the metric
  a collapse through that BN's affine alone would give (1: the affine has not moved);
- ``*_ev``: held-out centre views in eval mode (BN running statistics), as ``siamkit eval
  metrics`` measures them: ``std_ev``, ``rankme_ev`` (RankMe, arXiv:2210.02885), ``top1_ev``,
  ``cos_ev`` (mean cosine between the outputs of different images; 1: one point);
- ``loss`` (mean of the last epoch's logged losses), kNN top-1 of the trained and of the
  random-init backbone, the wall time (minutes) of the training call; and the CPU model.

    .venv/bin/python benchmarks/simsiam_collapse.py [--quick] [--runs NAME,...] [--seeds 0,1]
        [--root /tmp/simsiam_collapse] [--reuse] [--set KEY=VALUE ...] [--json]

``--quick`` runs two cells (no stop-gradient at lr 0.4 and its stop-gradient reference).
``--reuse`` measures run folders that already hold a finished run instead of training them
again. One run at a time: each takes about 5 minutes on 2 shared CPU cores.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from siamkit import runtime
from siamkit.analysis.run_eval import metric_images
from siamkit.checkpoints import load_method
from siamkit.data.datasets import load_splits
from siamkit.data.views import Views
from siamkit.eval.features import extract_features
from siamkit.eval.metrics import output_std, rankme
from siamkit.eval.representation import project
from siamkit.recipes import load_config, recipe_path
from siamkit.train import pretrain

RECIPE = "simsiam/digits"
NO_SG = "method.stop_gradient=false"
NO_PRED = "method.predictor=none"

# name -> overrides of the digits recipe (train.epochs is 20 unless a run sets it); lr is
# base_lr x batch / 256, so base_lr 0.8 at batch 128 is lr 0.4
RUNS: dict[str, list[str]] = {
    # the catalogue's cells as they are: lr 0.025 (base_lr 0.05 at batch 128)
    "sg": [],
    "nosg": [NO_SG],
    "nopred": [NO_PRED],
    # the learning rate at the same batch and steps
    "nosg_lr0.1": [NO_SG, "optim.base_lr=0.2"],
    "nosg_lr0.4": [NO_SG, "optim.base_lr=0.8"],
    "sg_lr0.4": ["optim.base_lr=0.8"],
    "nopred_lr0.4": [NO_PRED, "optim.base_lr=0.8"],
    "nopred_lr1.6": [NO_PRED, "optim.base_lr=3.2"],
    "sg_lr1.6": ["optim.base_lr=3.2"],
    # steps: batch 32 at the paper's rule (4x the steps at a quarter of the lr)
    "nosg_b32": [NO_SG, "optim.batch_size=32"],
}
# what was measured for the report (2 shared CPU cores, about 5 minutes a run)
GRID = ["sg", "nosg", "sg_lr0.4", "nosg_lr0.4", "nopred_lr0.4", "nopred_lr1.6"]
QUICK = ["sg_lr0.4", "nosg_lr0.4"]
EPOCHS = 20


def run_config(name: str, overrides: list[str], seed: int, root: Path) -> Any:
    """The RunConfig of one cell, as ``experiments.loading.cell_config`` builds a cell's."""
    values = {
        "train.output_dir": str(root / f"{name}_s{seed}"),
        "train.progress_bar": False,
        "train.seed": seed,
        "train.loggers": ["csv"],
    }
    return load_config(recipe_path(RECIPE), [f"train.epochs={EPOCHS}", *overrides], values)


def _output_bn(projector: nn.Module) -> nn.BatchNorm1d | None:
    """The projector's output BatchNorm1d (its last module), if it has one."""
    last = list(projector.children())[-1] if list(projector.children()) else None
    return last if isinstance(last, nn.BatchNorm1d) else None


class _TrainMode(nn.Module):
    """A module that stays in train mode (BN on batch statistics) when asked for eval mode."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def train(self, mode: bool = True) -> _TrainMode:
        del mode
        self.module.train(True)
        self.training = True
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.forward_features(x)  # type: ignore[operator]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def geometry(z: torch.Tensor) -> dict[str, float]:
    """Collapse std, RankMe, top singular value share, cross-image cosine of ``(N, d)``."""
    u = F.normalize(z.double(), dim=1)
    s2 = torch.linalg.svdvals(u).pow(2)
    cos = u @ u.T
    off = ~torch.eye(len(u), dtype=torch.bool)
    return {
        "std": output_std(z),
        "rankme": rankme(z),
        "top1": float(s2[0] / s2.sum()),
        "cos": float(cos[off].mean()),
        "abs_cos": float(cos[off].abs().mean()),
    }


@torch.no_grad()
def train_mode_batches(method: nn.Module, cfg: Any) -> list[torch.Tensor]:
    """Projections of augmented training views as training computes them: train mode (BN on
    the batch's statistics), batches of the run's size (full batches only), one seeded view.
    """
    images = load_splits(cfg.data).train
    backbone = _TrainMode(copy.deepcopy(method.backbone))  # copies: running stats untouched
    projector = _TrainMode(copy.deepcopy(method.projector))
    b = cfg.optim.batch_size
    z = extract_features(
        backbone,
        images,
        cfg.augment,
        batch_size=b,
        head=projector,
        views=Views([cfg.augment]),
        generator=torch.Generator().manual_seed(0),
    )
    return [c for c in z.split(b) if len(c) == b]


@torch.no_grad()
def analyse(checkpoint: str | Path) -> dict[str, Any]:
    """Geometry of the projection output of a checkpoint.

    ``*_tb``: augmented training views in train mode, batch by batch (what the training monitor
    sees), averaged over the batches; ``*_ev``: held-out centre views in eval mode (what
    ``siamkit eval metrics`` measures).
    """
    cfg, method = load_method(checkpoint)
    out: dict[str, Any] = {}
    batches = train_mode_batches(method, cfg)
    per_batch = [geometry(z) for z in batches]
    for key in per_batch[0]:
        out[f"{key}_tb"] = sum(g[key] for g in per_batch) / len(per_batch)
    images, _ = metric_images(cfg.data, 5000, 0)
    h = extract_features(method.backbone, images, cfg.augment)  # eval mode
    out.update({f"{k}_ev": v for k, v in geometry(project(method.projector, h)).items()})
    out["rankme_h"] = rankme(h)
    bn = _output_bn(method.projector)
    if bn is not None and bn.affine:
        gamma, beta = bn.weight.double(), bn.bias.double()
        out["gamma_abs"] = float(gamma.abs().mean())
        out["beta_rms"] = float(beta.pow(2).mean().sqrt())
        out["gamma_pred"] = float(gamma.abs().mean() / (gamma.pow(2) + beta.pow(2)).mean().sqrt())
        # Each batch's standardised pre-BN output xhat = (z - beta) / gamma (zero mean, unit
        # variance per channel): the largest share of its energy sum_i ||xhat_i||^2 in one
        # image, and the images on the smaller side of its first principal direction. Outputs
        # on one line through the batch mean with a share p of the images on one side have a
        # collapse std of 2 sqrt(p (1 - p)) (std_line).
        shares, minority, line = [], [], []
        for z in batches:
            xhat = (z.double() - beta) / gamma
            e = xhat.pow(2).sum(dim=1)
            shares.append(float(e.max() / e.sum()))
            v = torch.linalg.svd(xhat, full_matrices=False).Vh[0]
            side = (xhat @ v > 0).double().mean().item()
            q = min(side, 1 - side)
            minority.append(q * len(z))
            line.append(2 * math.sqrt(q * (1 - q)))
        out["top_image"] = sum(shares) / len(shares)
        out["minority"] = sum(minority) / len(minority)
        out["std_line"] = sum(line) / len(line)
    return out


def last_epoch_loss(run_dir: Path) -> float | None:
    """Mean of the logged training losses of the last epoch (metrics.csv)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return None
    rows = [r for r in csv.DictReader(path.open()) if r.get("train/loss")]
    if not rows:
        return None
    last = rows[-1]["epoch"]
    values = [float(r["train/loss"]) for r in rows if r["epoch"] == last]
    return sum(values) / len(values)


def run(name: str, overrides: list[str], seed: int, root: Path, reuse: bool) -> dict[str, Any]:
    """Train one cell (or reuse its finished folder) and measure it."""
    cfg = run_config(name, overrides, seed, root)
    out = Path(cfg.train.output_dir)
    start = time.perf_counter()
    if reuse and (out / "results.json").is_file():
        result = json.loads((out / "results.json").read_text())
    else:
        result = vars(pretrain(cfg, overwrite=True))
    steps = result["epochs"] * (len(load_splits(cfg.data).train) // cfg.optim.batch_size)
    row: dict[str, Any] = {
        "run": name,
        "seed": seed,
        "batch": cfg.optim.batch_size,
        "lr": cfg.optim.lr,
        "wd": cfg.optim.weight_decay,
        "epochs": result["epochs"],
        "steps": steps,
        "stop_grad": cfg.method.stop_gradient,
        "predictor": cfg.method.predictor,
        "std_tr": result["collapse_std"],
        "loss": last_epoch_loss(out),
        "knn": result["knn_top1"],
        "knn_init": result["random_init_knn_top1"],
        "minutes": result["minutes"],
    }
    row.update(analyse(result["checkpoint"]))
    row["measure_s"] = time.perf_counter() - start - (0 if reuse else 60 * result["minutes"])
    return row


COLUMNS = [  # key, width, format of the value
    ("run", 18, "<"),
    ("seed", 4, ""),
    ("batch", 5, ""),
    ("lr", 6, ".3g"),
    ("wd", 6, ".0e"),
    ("steps", 5, ""),
    ("std_tr", 6, ".3f"),
    ("std_tb", 6, ".3f"),
    ("top1_tb", 7, ".3f"),
    ("abs_cos_tb", 10, ".3f"),
    ("cos_tb", 6, ".3f"),
    ("top_image", 9, ".3f"),
    ("minority", 8, ".1f"),
    ("std_line", 8, ".3f"),
    ("gamma_pred", 10, ".3f"),
    ("std_ev", 6, ".3f"),
    ("rankme_ev", 9, ".1f"),
    ("top1_ev", 7, ".3f"),
    ("cos_ev", 6, ".3f"),
    ("loss", 7, ".3f"),
    ("knn", 6, ".2f"),
    ("knn_init", 8, ".2f"),
    ("minutes", 7, ".1f"),
]


def format_row(row: dict[str, Any]) -> str:
    """One line of the table ("-" where a value is missing)."""
    cells = []
    for key, width, fmt in COLUMNS:
        value = row.get(key)
        if value is None:
            cells.append("-".rjust(width))
        elif fmt == "<":
            cells.append(str(value).ljust(width))
        else:
            cells.append(format(value, f">{width}{fmt}"))
    return " ".join(cells)


def header() -> str:
    """The table's header line."""
    return " ".join(k.ljust(w) if f == "<" else k.rjust(w) for k, w, f in COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--runs", help=f"comma-separated names of {', '.join(RUNS)}")
    parser.add_argument("--seeds", default="0", help="comma-separated train.seed values")
    parser.add_argument("--root", default="/tmp/simsiam_collapse", help="run folders go here")
    parser.add_argument("--reuse", action="store_true", help="measure finished run folders")
    parser.add_argument("--set", nargs="+", default=[], help="extra overrides for every run")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = parser.parse_args()
    names = QUICK if args.quick else (args.runs.split(",") if args.runs else GRID)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown runs {unknown}; choose from {', '.join(RUNS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"machine: {runtime.machine_summary()}; torch {torch.__version__}")
    print(f"recipe {RECIPE}, train.epochs={EPOCHS} unless set; extra overrides: {args.set}")
    rows = []
    for name in names:
        for seed in seeds:
            overrides = [*RUNS[name], *args.set]
            row = run(name, overrides, seed, Path(args.root), args.reuse)
            rows.append(row)
            print(f"{name} seed {seed}: {' '.join(overrides) or '(recipe)'}", flush=True)
            print(header())
            print(format_row(row), flush=True)
    print("\nall runs:")
    print(header())
    for row in rows:
        print(format_row(row))
    if args.json:
        print(json.dumps(rows, default=str))


if __name__ == "__main__":
    main()
