"""Peak memory of a short ImageNet-recipe pretraining as the number of images grows.

Builds synthetic ImageNet-layout folders (``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``,
500 x 375 photos-like JPEGs, 10 classes) of N and 4N training images, packs each once into
shards (``siamkit pack``), and runs ``siamkit pretrain --config configs/simsiam/imagenet.yaml``
on each with ``data.storage`` = stream, shards and memory (the decode-once path, for
comparison): backbone overridden to ``small_cnn`` at 1/4 width, batch 32, ``train.max_steps``
steps, then the final kNN of the trained and the random-init encoder over every training and
validation image (the bank streamed).

For every run it prints two peaks, sampled from ``/proc`` every 0.2 s: the resident set of the
training process (``rss``, what ``top`` shows) and the proportional set size of the whole
process tree with its DataLoader workers (``pss``: forked workers share most pages with the
training process, which PSS counts once). The ratio 4N/N of each shows whether memory grows
with the number of images (target <= 1.15 for stream and shards; the memory path grows with N
by design).

``--small-images`` instead trains the digits recipe with its default settings on a folder of
70,000 grayscale 28 x 28 images in 10 class folders (MNIST's size, made from scikit-learn's
digits) and prints its peak memory and kNN figures.

    .venv/bin/python benchmarks/data_scale.py                 # N = 2000
    .venv/bin/python benchmarks/data_scale.py --n 500 --steps 5 --storages stream   # quick look
    .venv/bin/python benchmarks/data_scale.py --small-images --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

from siamkit.runtime import machine_summary

REPO = Path(__file__).resolve().parents[1]
CLASSES = 10


# --------------------------------------------------------------------------------------------
# Peak memory of a process tree, from /proc (Linux)
# --------------------------------------------------------------------------------------------
@dataclass
class PeakMemory:
    """Peaks of one command, in bytes, and its exit code and wall time."""

    rss: int
    pss: int
    returncode: int
    seconds: float
    output: str


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _tree(pid: int) -> list[int]:
    pids, stack = [], [pid]
    while stack:
        p = stack.pop()
        pids.append(p)
        stack += _children(p)
    return pids


def _field(path: str, name: str) -> int:
    """A ``kB`` field of a ``/proc`` status file, in bytes (0 when the process is gone)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_measured(
    cmd: list[str], env: dict[str, str] | None = None, every: float = 0.2
) -> PeakMemory:
    """Run ``cmd`` to completion, sampling the memory of its process tree every ``every`` s."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peak = {"rss": 0, "pss": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["rss"] = max(peak["rss"], _field(f"/proc/{proc.pid}/status", "VmRSS"))
            pss = sum(_field(f"/proc/{p}/smaps_rollup", "Pss") for p in _tree(proc.pid))
            peak["pss"] = max(peak["pss"], pss)
            done.wait(every)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    output, _ = proc.communicate()
    done.set()
    thread.join()
    return PeakMemory(
        peak["rss"], peak["pss"], proc.returncode, time.perf_counter() - start, output
    )


# --------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------
def _photo(args: tuple[str, int]) -> None:
    """A smooth random 500 x 375 picture (low-frequency colour field plus grain) as JPEG."""
    path, seed = args
    rng = np.random.default_rng(seed)
    field = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    im = Image.fromarray(field).resize((500, 375), Image.Resampling.BICUBIC)
    grain = rng.integers(-12, 13, (375, 500, 3))
    arr = np.clip(np.asarray(im, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=85)


def build_folder(root: Path, n: int, workers: int = 2) -> Path:
    """``root`` with ``n`` training and ``n // 10`` validation JPEGs (kept between runs)."""
    done = root / ".complete"
    if done.is_file():
        return root
    jobs = []
    for split, count in (("train", n), ("val", max(CLASSES, n // 10))):
        for i in range(count):
            folder = root / split / f"n{i % CLASSES:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            jobs.append((str(folder / f"{split}_{i:07d}.JPEG"), hash((split, i)) & 0xFFFFFFF))
    with Pool(workers) as pool:
        pool.map(_photo, jobs, chunksize=64)
    done.touch()
    return root


def build_small_images(root: Path, n: int = 70_000) -> Path:
    """``root/<digit>/*.png``: ``n`` grayscale 28 x 28 images from scikit-learn's digits, each
    upsampled to 20 x 20, placed at a random offset and given a little noise (like MNIST)."""
    done = root / ".complete"
    if done.is_file():
        return root
    from sklearn.datasets import load_digits

    bunch = load_digits()
    rng = np.random.default_rng(0)
    for k in range(n):
        i = k % len(bunch.target)
        digit = Image.fromarray((bunch.images[i] * 255 / 16).astype(np.uint8))
        canvas = np.zeros((28, 28), dtype=np.int16)
        top, left = rng.integers(1, 8, size=2)
        canvas[top : top + 20, left : left + 20] = np.asarray(digit.resize((20, 20)))
        canvas += rng.integers(0, 20, (28, 28))
        folder = root / str(bunch.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(folder / f"{k:05d}.png")
    done.touch()
    return root


def small_images_run(args: argparse.Namespace) -> None:
    """The digits recipe with default data settings on 70,000 small grayscale images."""
    work = Path(args.work)
    folder = build_small_images(work / "small-images-70k")
    out = work / "runs" / "small-images"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "siamkit.cli", "pretrain",
        "--config", str(REPO / "configs/simsiam/digits.yaml"),
        "--dataset", "folder", "--data", str(folder),
        "--epochs", str(args.epochs),
        "--output", str(out), "--no-progress",
    ]  # fmt: skip
    peak = run_measured(cmd, env={"SIAMKIT_CACHE": str(out / "cache")})
    print(peak.output[-1500:])
    print(
        f"70,000 images of 28 x 28, {args.epochs} epochs: exit {peak.returncode}, peak rss "
        f"{peak.rss / 1e9:.2f} GB, pss {peak.pss / 1e9:.2f} GB, {peak.seconds / 60:.1f} min"
    )


def pack_once(folder: Path, workers: int) -> Path:
    """Shards of ``folder`` beside it (packed on the first call)."""
    shards = folder.with_name(folder.name + "-shards")
    if not (shards / "siamkit-shards.json").is_file():
        from siamkit.data.pack import pack

        pack(folder, shards, num_workers=workers, overwrite=True)
    return shards


def pretrain_command(data: Path, storage: str, out: Path, args: argparse.Namespace) -> list[str]:
    return [
        sys.executable, "-m", "siamkit.cli", "pretrain",
        "--config", str(REPO / "configs/simsiam/imagenet.yaml"),
        "--data", str(data),
        "--storage", storage,
        "--output", str(out),
        "--overwrite", "--no-progress",
        "--set",
        "backbone.name=small_cnn",
        "backbone.width=0.25",
        f"optim.batch_size={args.batch_size}",
        f"train.max_steps={args.steps}",
        f"data.num_workers={args.workers}",
        f"data.cache_dir={out / 'cache'}",  # a fresh cache: the memory path decodes every time
        f"train.knn_every={1 if args.knn else 0}",
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="training images of the small set")
    parser.add_argument("--steps", type=int, default=10, help="optimiser steps per run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers per run")
    parser.add_argument("--storages", nargs="+", default=["stream", "shards", "memory"])
    parser.add_argument("--no-knn", dest="knn", action="store_false", help="skip the final kNN")
    parser.add_argument("--work", default="/tmp/siamkit-data-scale", help="folders and runs")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--small-images", action="store_true", help="the 70,000-image run")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of --small-images")
    args = parser.parse_args()
    work = Path(args.work)
    print(f"machine: {machine_summary()}")
    if args.small_images:
        small_images_run(args)
        return
    sizes = [args.n, 4 * args.n]
    rows: dict[tuple[str, int], PeakMemory] = {}
    for n in sizes:
        folder = build_folder(work / f"imagenet-{n}", n)
        for storage in args.storages:
            data = pack_once(folder, args.workers) if storage == "shards" else folder
            out = work / "runs" / f"{storage}-{n}"
            shutil.rmtree(out, ignore_errors=True)
            peak = run_measured(pretrain_command(data, storage, out, args))
            if peak.returncode != 0:
                raise SystemExit(f"{storage} at N={n} failed:\n{peak.output[-3000:]}")
            rows[storage, n] = peak
            gb = f"rss {peak.rss / 1e9:5.2f} GB  pss {peak.pss / 1e9:5.2f} GB"
            print(f"  {storage:6} N={n:6d}: {gb}  ({peak.seconds:.0f} s)", flush=True)
    head = ["storage", "rss N", "rss 4N", "ratio", "pss N", "pss 4N", "ratio"]
    print("\n" + " ".join(f"{h:>8}" for h in head))
    table = {}
    for storage in args.storages:
        small, large = rows[storage, sizes[0]], rows[storage, sizes[1]]
        table[storage] = {
            "rss": [small.rss, large.rss],
            "pss": [small.pss, large.pss],
            "rss_ratio": large.rss / small.rss,
            "pss_ratio": large.pss / small.pss,
        }
        cells = [small.rss / 1e9, large.rss / 1e9, large.rss / small.rss]
        cells += [small.pss / 1e9, large.pss / 1e9, large.pss / small.pss]
        print(f"{storage:>8} " + " ".join(f"{c:8.2f}" for c in cells))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": machine_summary(), "sizes": sizes, "runs": table}, indent=2)
        )


if __name__ == "__main__":
    main()
