"""Every method on its CIFAR-10 CPU-budget recipe, one after another, as one markdown table.

For each method with a recipe ``configs/<method>/cifar10_cpu.yaml`` this runs ``siamkit pretrain``
(a separate process per method, so none inherits another's state or memory) and collects its
``results.json``: kNN top-1 on the test split, the same encoder at random init, the final collapse
metric, images per second and the epochs reached in the recipe's budget.

    .venv/bin/python benchmarks/method_table.py                      # all methods (~15 min each)
    .venv/bin/python benchmarks/method_table.py --methods simclr byol
    .venv/bin/python benchmarks/method_table.py --table-only          # re-read finished runs

Run it on an otherwise idle machine: the budget is wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def recipes() -> dict[str, Path]:
    """Method name -> its CIFAR-10 CPU-budget recipe."""
    return {p.parent.name: p for p in sorted(REPO.glob("configs/*/cifar10_cpu.yaml"))}


def run(method: str, recipe: Path, root: Path, extra: list[str]) -> None:
    """``siamkit pretrain`` of one recipe into ``root/method``."""
    cmd = [
        str(Path(sys.executable).with_name("siamkit")),
        "pretrain",
        "--config",
        str(recipe),
        "--output",
        str(root / method),
        "--overwrite",
        "--no-progress",
        *extra,
    ]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=False)


def table(methods: list[str], root: Path) -> str:
    """The markdown table of the finished runs under ``root``."""
    rows = [
        "| method | epochs | minutes | kNN top-1 | random init | gain | collapse std | images/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in methods:
        path = root / m / "results.json"
        if not path.is_file():
            rows.append(f"| {m} | (no result) | | | | | | |")
            continue
        r = json.loads(path.read_text())
        rows.append(
            f"| {m} | {r['epochs']} | {r['minutes']:.1f} | {r['knn_top1']:.2f} | "
            f"{r['random_init_knn_top1']:.2f} | {r['knn_top1'] - r['random_init_knn_top1']:+.2f} | "
            f"{r['collapse_std']:.3f} | {r['images_per_sec']:.0f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="*", help="default: every method with a recipe")
    parser.add_argument("--root", default=str(REPO / "runs/table"), help="run folders go here")
    parser.add_argument("--table-only", action="store_true", help="only print the table")
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every run")
    args = parser.parse_args()
    available = recipes()
    methods = args.methods or sorted(available)
    unknown = [m for m in methods if m not in available]
    if unknown:
        parser.error(
            f"no configs/<method>/cifar10_cpu.yaml for {unknown}; have {sorted(available)}"
        )
    root = Path(args.root)
    if not args.table_only:
        extra = [x for s in args.set for x in ("--set", s)]
        for m in methods:
            run(m, available[m], root, extra)
    print(table(methods, root))


if __name__ == "__main__":
    main()
