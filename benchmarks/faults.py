"""Fault injection: kill -9 at random moments, resume, and compare with the uninterrupted run.

A small SimSiam run on the bundled digits (3 epochs, a checkpoint every 4 steps, the kNN monitor
every epoch) runs once uninterrupted as the reference. Then every trial starts the same run,
kills it with SIGKILL at a random moment, checks that every checkpoint file on disk loads, and
resumes with ``--resume`` (again and again if a kill came before the first checkpoint) until the
run finishes; its final weights are compared with the reference, tensor by tensor.

Half the trials kill at a random time; the other half watch the checkpoint folder and kill the
moment a checkpoint's temporary file appears, inside a save. Half run with ``TMPDIR`` on the
run's own filesystem, half on another one (``/dev/shm``, a tmpfs): siamkit writes every file to
a temporary file beside it and renames it, so neither may leave a truncated checkpoint.

    .venv/bin/python benchmarks/faults.py              # 20 trials
    .venv/bin/python benchmarks/faults.py --trials 4   # a quick look
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from siamkit.runtime import machine_summary
from siamkit.safe_io import TEMP_PREFIX, safe_torch_load

REPO = Path(__file__).resolve().parents[1]
RUN = [
    "--config", str(REPO / "configs/simsiam/digits.yaml"),
    "--epochs", "3", "--batch-size", "64", "--no-progress",
    "--set", "augment.size=16", "backbone.width=0.25", "method.proj_dim=64",
    "method.proj_hidden_dim=64", "method.pred_hidden_dim=16", "train.knn_every=1",
    "train.checkpoint_every_steps=4", "train.precision=32-true",
]  # fmt: skip


def command(out: Path, resume: bool) -> list[str]:
    cmd = [str(Path(sys.executable).parent / "siamkit"), "pretrain", *RUN, "--output", str(out)]
    return cmd + (["--resume", str(out)] if resume else ["--overwrite"])


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = safe_torch_load(out / "checkpoints" / "last.ckpt")[
        "state_dict"
    ]
    return state


def check_files(out: Path) -> int:
    """Checkpoint files on disk that do not load (a temporary file is not a checkpoint)."""
    corrupt = 0
    for f in sorted((out / "checkpoints").glob("*.ckpt")):  # temporary files end in .tmp
        try:
            safe_torch_load(f)
        except Exception:
            corrupt += 1
            print(f"    corrupt: {f.name}", flush=True)
    return corrupt


def run_until_killed(
    cmd: list[str], env: dict[str, str], out: Path, in_save: bool, when: float
) -> bool:
    """Start ``cmd``; kill it after ``when`` seconds, or inside a save. True if it finished."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + when
    folder = out / "checkpoints"
    while proc.poll() is None:
        if in_save:
            if folder.is_dir() and any(p.name.startswith(TEMP_PREFIX) for p in folder.iterdir()):
                break
        elif time.monotonic() >= deadline:
            break
        time.sleep(0.002 if in_save else 0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return False
    return proc.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--work", default="/tmp/siamkit-faults")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    same_fs, other_fs = work / "tmp", Path("/dev/shm/siamkit-faults-tmp")
    for d in (same_fs, other_fs):
        d.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine_summary()}, torch {torch.__version__}", flush=True)
    env = {**os.environ, "SIAMKIT_CACHE": str(work / "cache"), "TMPDIR": str(same_fs)}
    ref = work / "reference"
    start = time.monotonic()
    subprocess.run(command(ref, False), env=env, check=True, capture_output=True)
    duration = time.monotonic() - start
    reference = final_weights(ref)
    print(f"reference run: {duration:.0f} s", flush=True)
    rng = random.Random(args.seed)
    rows = []
    for trial in range(args.trials):
        in_save = trial % 2 == 1
        tmpdir = other_fs if (trial // 2) % 2 else same_fs
        out = work / f"trial{trial:02d}"
        trial_env = {**env, "TMPDIR": str(tmpdir)}
        kills = corrupt = 0
        resume = False
        while True:
            # Kill the first start (and a second one in every fourth trial); then run to the end.
            kill = kills < (2 if trial % 4 == 3 else 1)
            if kill:
                when = rng.uniform(0.05, 0.95) * duration  # anywhere in the run
                finished = run_until_killed(command(out, resume), trial_env, out, in_save, when)
                if not finished:
                    kills += 1
                    corrupt += check_files(out) if (out / "checkpoints").is_dir() else 0
            else:
                done = subprocess.run(command(out, resume), env=trial_env, capture_output=True)
                finished = done.returncode == 0
                if not finished:
                    raise SystemExit(f"trial {trial} failed:\n{done.stderr.decode()[-3000:]}")
            if finished:
                break
            resume = (out / "checkpoints" / "last.ckpt").is_file()
        corrupt += check_files(out)
        mine = final_weights(out)
        exact = mine.keys() == reference.keys() and all(
            torch.equal(mine[k], reference[k]) for k in reference
        )
        where = "another filesystem" if tmpdir == other_fs else "the run's filesystem"
        rows.append((trial, "inside a save" if in_save else "random", where, kills, corrupt, exact))
        print(
            f"  trial {trial:2d}: {rows[-1][1]:13} TMPDIR on {where}: {kills} kill(s), "
            f"{corrupt} corrupt, bit-exact {exact}",
            flush=True,
        )
    print("\n| trial | kill | TMPDIR | kills | corrupt checkpoints | final weights bit-exact |")
    print("| ---: | --- | --- | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {'yes' if r[5] else 'no'} |")
    total_corrupt = sum(r[4] for r in rows)
    exact = sum(r[5] for r in rows)
    print(
        f"\n{sum(r[3] for r in rows)} kills: {total_corrupt} corrupt checkpoints, "
        f"{exact} of {len(rows)} runs bit-exact"
    )
    shutil.rmtree(other_fs, ignore_errors=True)


if __name__ == "__main__":
    main()
