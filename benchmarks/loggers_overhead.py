"""What the W&B and MLflow loggers add to a short run: wall time against CSV + TensorBoard.

Runs the ``simsiam/digits`` recipe for one epoch (11 steps of 128 images, logged every 2 steps,
and the final kNN) with four logger sets, interleaved and repeated in one process after one
warm-up round of each (so the one-time imports are not counted), and prints for each the
fastest and the median seconds of the whole run, their ratios to ``[csv, tensorboard]``, and
the seconds the training process spent inside each logger's own calls (creation, the run's
start, hyper-parameters, metrics, saves, the end; W&B's service process works beside it). W&B
runs offline and MLflow on a file store in a temporary folder, so nothing touches the network.
The one-time import of each package is timed in a fresh interpreter.

    .venv/bin/python benchmarks/loggers_overhead.py [--repeats 3] [--epochs 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.update(
    WANDB_MODE="offline",
    WANDB_SILENT="true",
    WANDB_CONSOLE="off",
    WANDB_DISABLE_GIT="true",
    WANDB_DISABLE_CODE="true",
    MLFLOW_DISABLE_TELEMETRY="true",
    DO_NOT_TRACK="true",
)
os.environ.pop("MLFLOW_TRACKING_URI", None)

from siamkit.data.datasets import load_digits
from siamkit.recipes import load_config, recipe_path
from siamkit.runtime import machine_summary
from siamkit.train import loggers, pretrain
from siamkit.train.resume import ContinuedCSVLogger

SETS = {
    "csv+tensorboard": "[csv,tensorboard]",
    "+wandb": "[csv,tensorboard,wandb]",
    "+mlflow": "[csv,tensorboard,mlflow]",
    "+wandb+mlflow": "[csv,tensorboard,wandb,mlflow]",
}


#: Seconds spent inside each logger's calls in the current run (outermost calls only).
SPENT: dict[str, float] = defaultdict(float)


def instrument() -> None:
    """Time every call of the loggers' own methods, and the first use of their experiment."""
    classes = {
        "csv": ContinuedCSVLogger,
        "tensorboard": loggers.HParamsTensorBoardLogger,
        "wandb": loggers.FinishingWandbLogger,
        "mlflow": loggers.ScopedMLFlowLogger,
    }
    depth: dict[str, int] = defaultdict(int)

    def timed(kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            depth[kind] += 1
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[kind] -= 1
                if not depth[kind]:  # a call inside another one is counted once
                    SPENT[kind] += time.perf_counter() - t

        return wrapper

    for kind, cls in classes.items():
        for name in ("__init__", "log_metrics", "log_hyperparams", "save", "finalize"):
            setattr(cls, name, timed(kind, getattr(cls, name)))
        experiment = next(
            c.__dict__["experiment"] for c in cls.__mro__ if "experiment" in c.__dict__
        )
        cls.experiment = property(timed(kind, experiment.fget))  # type: ignore[method-assign]


def import_seconds(module: str, repeats: int) -> float:
    """Median seconds a fresh interpreter takes to import ``module``, less an empty one's."""

    def run(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t

    return statistics.median(run(f"import {module}") - run("pass") for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    instrument()
    splits = load_digits(32)
    times: dict[str, list[float]] = {name: [] for name in SETS}
    inside: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats + 1):  # round 0 warms up (imports, first W&B service)
            for name, loggers in SETS.items():
                out = Path(tmp) / f"{round_}-{name}"
                cfg = load_config(
                    recipe_path("simsiam/digits"),
                    [
                        f"train.epochs={args.epochs}",
                        f"train.output_dir={out}",
                        f"train.loggers={loggers}",
                        "train.log_every_n_steps=2",
                        "train.progress_bar=false",
                    ],
                )
                SPENT.clear()
                t = time.perf_counter()
                pretrain(cfg, splits=splits)
                if round_:
                    times[name].append(time.perf_counter() - t)
                    for kind, seconds in SPENT.items():
                        inside[f"{kind} in {name}"].append(seconds)
    print(f"\n{machine_summary()}")
    print(f"simsiam/digits, {args.epochs} epoch(s), {args.repeats} interleaved runs each")
    fastest = min(times["csv+tensorboard"])
    middle = statistics.median(times["csv+tensorboard"])
    print(f"{'loggers':<18} {'min s':>7} {'ratio':>6} {'median s':>9} {'ratio':>6}")
    for name, values in times.items():
        lo, mid = min(values), statistics.median(values)
        print(f"{name:<18} {lo:7.2f} {lo / fastest:6.2f} {mid:9.2f} {mid / middle:6.2f}")
    print("seconds inside each logger's calls, median per run:")
    for key, values in inside.items():
        print(f"  {key:<34} {statistics.median(values):6.2f}")
    for module in ("wandb", "mlflow"):
        print(f"one-time import of {module}: {import_seconds(module, args.repeats):.2f} s")


if __name__ == "__main__":
    main()
