"""MINE beside SimCLR and SimSiam: kNN top-1 and ``siamkit eval mi`` of each, and of random init.

For each method this runs ``siamkit pretrain`` on its recipe ``configs/<method>/<recipe>.yaml``
(one process per method), then ``siamkit eval mi`` on the checkpoint and, once, on the same
architecture at random initialisation; it prints one markdown table: kNN top-1 (trained and
random init, from ``results.json``), and the MINE estimates of ``I(h(v1); h(v2))``,
``I(g(v1); g(v2))`` and ``I(h; y)``, in nats.

    .venv/bin/python benchmarks/mine_table.py                           # digits recipes
    .venv/bin/python benchmarks/mine_table.py --recipe cifar10_cpu      # CIFAR-10 CPU budget
    .venv/bin/python benchmarks/mine_table.py --table-only              # re-read finished runs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from siamkit.runtime import machine_summary

REPO = Path(__file__).resolve().parents[1]
SIAMKIT = str(Path(sys.executable).with_name("siamkit"))


def eval_mi(run: Path, random_init: bool, max_images: int) -> dict[str, Any]:
    """``siamkit eval mi --json`` of a run folder (its last JSON line)."""
    cmd = [SIAMKIT, "eval", "mi", "--checkpoint", str(run), "--json"]
    cmd += ["--max-images", str(max_images)] + (["--random-init"] if random_init else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def nats(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="digits", help="digits (default) or cifar10_cpu")
    parser.add_argument("--methods", nargs="+", default=["simsiam", "simclr", "mine"])
    parser.add_argument("--root", default="runs/mine_table")
    parser.add_argument("--max-images", type=int, default=5000)
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every run")
    args = parser.parse_args()
    root = REPO / args.root / args.recipe
    print(f"machine: {machine_summary()}")
    rows = []
    for method in args.methods:
        run = root / method
        if not args.table_only:
            cmd = [SIAMKIT, "pretrain", "--config", f"configs/{method}/{args.recipe}.yaml"]
            cmd += ["--output", str(run), "--overwrite", "--no-progress"]
            cmd += ["--set", *args.set] if args.set else []
            subprocess.run(cmd, check=True, cwd=REPO)
        results = json.loads((run / "results.json").read_text())
        rows.append((method, results, eval_mi(run, False, args.max_images)))
    # Random init of the first method's architecture (its backbone; the heads are its own).
    first = rows[0]
    rows.append(
        (
            f"random init ({args.methods[0]})",
            first[1],
            eval_mi(root / args.methods[0], True, args.max_images),
        )
    )
    print(f"\n{args.recipe}, eval mi on {rows[0][2]['num_images']} {rows[0][2]['split']} images")
    print("| method | kNN top-1 | epochs | minutes | I(h(v1); h(v2)) | I(g(v1); g(v2)) | I(h; y) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, res, mi in rows:
        random = name.startswith("random init")
        knn = res["random_init_knn_top1"] if random else res["knn_top1"]
        epochs, minutes = ("-", "-") if random else (res["epochs"], f"{res['minutes']:.1f}")
        print(f"| {name} | {knn:.2f} | {epochs} | {minutes} | {nats(mi['h']['two_view'])} | "
              f"{nats(mi['g']['two_view'])} | {nats(mi['h'].get('label'))} |")  # fmt: skip
    print(f"\nH(y) = {rows[0][2].get('label_entropy', float('nan')):.3f} nats")


if __name__ == "__main__":
    main()
