"""Loader throughput: streamed and sharded images against the memory path and against lightly.

Two measurements, each in one run on one machine (ratios, not absolute times, compare across
machines; the CPU model is printed first):

  (a) training: SimSiam on the ResNet-18 CIFAR variant at 32-px views (``configs/simsiam/
      cifar10_cpu.yaml`` with ``augment.size=32``) on the real CIFAR-10 folder, fed from memory,
      streamed files and packed shards; images/s of wall-clock time between steps, waits for
      data included (``train/images_per_sec``), and the share spent waiting
      (``train/data_wait``). Printed as ratios to the memory path (aim: >= 0.8).
  (b) the loader alone at 224 px: two 224-px views of 500 x 375 JPEGs (the folder of
      ``benchmarks/data_scale.py``) from siamkit's streamed loader (decode once, cut both crops
      in the worker; flip, colour and blur follow batched on the training device) against
      torchvision's ``ImageFolder`` with lightly's ``SimSiamTransform`` (everything per image in
      the workers), with the same number of workers and batch size (aim: >= 1.5x). siamkit is
      also timed with its batched colour/blur on this CPU, for a machine without a GPU.

Rounds are interleaved and each figure is the best round: a burst of noise on a shared machine
then hurts no side more than the others. ``lightly`` is imported here only.

    .venv/bin/python benchmarks/data_throughput.py
    .venv/bin/python benchmarks/data_throughput.py --part b --workers 2 --batches 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from siamkit.data.datasets import load_splits
from siamkit.data.loader import make_loader
from siamkit.data.views import Views
from siamkit.recipes import load_config
from siamkit.runtime import machine_summary
from siamkit.train import pretrain

REPO = Path(__file__).resolve().parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar10"


def training_rate(
    storage: str, data: Path, steps: int, workers: int, work: Path
) -> tuple[float, float]:
    """(images/s, data-wait share) of ``steps`` training steps fed by ``storage``."""
    cfg = load_config(
        REPO / "configs/simsiam/cifar10_cpu.yaml",
        [
            f"data.path={data}",
            f"data.storage={storage}",
            f"data.num_workers={workers}",
            "augment.size=32",
            f"train.max_steps={steps}",
            "train.knn_every=0",
            "train.progress_bar=false",
            f"train.output_dir={work / 'runs' / storage}",
        ],
    )
    result = pretrain(cfg, overwrite=True)
    assert result.images_per_sec is not None and result.data_wait is not None
    return result.images_per_sec, result.data_wait


def part_a(args: argparse.Namespace) -> None:
    from siamkit.data.pack import pack

    work = Path(args.work)
    shards = work / "cifar10-shards"
    if not (shards / "siamkit-shards.json").is_file():
        pack(CIFAR, shards, num_workers=2, overwrite=True)
    sources = {"memory": CIFAR, "stream": CIFAR, "shards": shards}
    best: dict[str, tuple[float, float]] = {}
    for r in range(args.rounds):
        for storage, data in sources.items():
            rate, wait = training_rate(storage, data, args.steps, args.workers, work)
            if storage not in best or rate > best[storage][0]:
                best[storage] = (rate, wait)
            print(f"  round {r + 1} {storage:6}: {rate:6.1f} images/s, {wait:.0%} waiting")
    base = best["memory"][0]
    print("\n(a) ResNet-18 CIFAR variant (width 1/4), 32-px views, batch 256:")
    for storage, (rate, wait) in best.items():
        print(
            f"    {storage:6} {rate:6.1f} images/s  {rate / base:5.2f}x memory  {wait:.0%} waiting"
        )


def _siamkit_rate(folder: Path, batches: int, batch: int, workers: int, finish: bool) -> float:
    cfg = load_config(
        REPO / "configs/simsiam/imagenet.yaml",
        [f"data.path={folder}", "data.storage=stream", f"data.num_workers={workers}"],
    )
    train = load_splits(cfg.data).train
    views = Views([cfg.augment, cfg.augment])
    loader = make_loader(train, views.specs, batch, train=True, seed=0)
    it = iter(loader)
    next(it)  # workers started
    start = time.perf_counter()
    for _ in range(batches):
        b = next(it)
        if finish:
            views(b.images)
    return batches * batch / (time.perf_counter() - start)


def _lightly_rate(folder: Path, batches: int, batch: int, workers: int) -> float:
    from lightly.transforms import SimSiamTransform
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(str(folder / "train"), transform=SimSiamTransform(input_size=224))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True
    )
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - start)


def part_b(args: argparse.Namespace) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from data_scale import build_folder  # the same synthetic 500 x 375 JPEGs

    folder = build_folder(Path(args.work) / "imagenet-2000", 2000)
    best = {"siamkit": 0.0, "siamkit + colour on CPU": 0.0, "lightly": 0.0}
    for r in range(args.rounds):
        rates = {
            "siamkit": _siamkit_rate(folder, args.batches, args.batch, args.workers, False),
            "siamkit + colour on CPU": _siamkit_rate(
                folder, args.batches, args.batch, args.workers, True
            ),
            "lightly": _lightly_rate(folder, args.batches, args.batch, args.workers),
        }
        for name, rate in rates.items():
            best[name] = max(best[name], rate)
            print(f"  round {r + 1} {name:24}: {rate:6.1f} images/s")
    print(f"\n(b) two 224-px views of 500 x 375 JPEGs, {args.workers} workers, batch {args.batch}:")
    for name, rate in best.items():
        print(f"    {name:24} {rate:6.1f} images/s  {rate / best['lightly']:5.2f}x lightly")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["a", "b", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30, help="training steps per run of (a)")
    parser.add_argument("--batches", type=int, default=15, help="batches timed per run of (b)")
    parser.add_argument("--batch", type=int, default=64, help="batch of (b)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--work", default="/tmp/siamkit-data-scale")
    args = parser.parse_args()
    print(f"machine: {machine_summary()}, torch {torch.__version__}")
    if args.part in ("a", "both"):
        part_a(args)
    if args.part in ("b", "both"):
        part_b(args)


if __name__ == "__main__":
    main()
