"""Evaluation table of pretrained checkpoints: kNN, linear probe on h and g(h), fine-tuning with
1% and 10% of the labels against a from-scratch baseline, and SimCLRv2 distillation.

Also the representation metrics (collapse std, RankMe, alignment, uniformity) of h and g(h).
Every figure comes from a ``siamkit`` command (printed before it runs, so each can be repeated
alone); the results are collected from their ``--json`` output into one markdown table.

    .venv/bin/python benchmarks/eval_table.py --run simsiam=runs/table/simsiam \\
        --run simclr=runs/table/simclr --teacher simclr

All runs share one class-balanced index file per label fraction (under ``--out``/splits), so
every fine-tuned model and the baseline see the same labelled images. The baseline uses the
architecture and views of the first run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SIAMKIT = str(Path(sys.executable).with_name("siamkit"))


def siamkit(*args: str) -> dict[str, Any]:
    """Run one ``siamkit ... --json`` command and return its JSON line."""
    cmd = [SIAMKIT, *args, "--json"]
    print("$", " ".join(cmd[1:]).replace(SIAMKIT, "siamkit"), flush=True)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"command failed ({done.returncode}):\n{done.stderr}")
    print(done.stdout.strip().splitlines()[0], flush=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run", action="append", required=True, metavar="NAME=DIR", help="a pretraining run"
    )
    parser.add_argument("--teacher", help="NAME of the run whose fine-tuned model is distilled")
    parser.add_argument("--teacher-fraction", type=float, default=0.1)
    parser.add_argument("--teacher-head-layers", type=int, default=1)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--finetune-epochs", type=int, help="default: SimCLR's 60 (1%%) / 30")
    parser.add_argument("--distill-epochs", type=int, default=3)
    parser.add_argument("--out", default="runs/eval_table", help="fine-tuned models go here")
    args = parser.parse_args()
    runs = dict(r.split("=", 1) for r in args.run)
    out = Path(args.out).resolve()
    index = {f: str(out / "splits" / f"labels-{f:g}.txt") for f in args.fractions}

    def finetune(ckpt: str, fraction: float, tag: str, *extra: str) -> dict[str, Any]:
        if args.finetune_epochs:
            extra = (*extra, "--epochs", str(args.finetune_epochs))
        return siamkit(
            "eval", "finetune", "--checkpoint", ckpt, "--label-fraction", str(fraction),
            "--index-file", index[fraction], "--output", str(out / tag), *extra,
        )  # fmt: skip

    rows: list[dict[str, Any]] = []
    for name, run in runs.items():
        row: dict[str, Any] = {"run": name}
        row["knn"] = siamkit("eval", "knn", "--checkpoint", run)["top1"]
        for feats in ("backbone", "projection"):
            row[f"linear_{feats}"] = siamkit(
                "eval", "linear", "--checkpoint", run, "--features", feats
            )["top1"]
        for f in args.fractions:
            row[f"ft_{f:g}"] = finetune(run, f, f"{name}-ft{f:g}")["top1"]
            if name == args.teacher:
                tag = f"{name}-ft{f:g}-head{args.teacher_head_layers}"
                layers = str(args.teacher_head_layers)
                row[f"ft_{f:g}_head"] = finetune(run, f, tag, "--from-head-layers", layers)["top1"]
        rows.append(row)
    first = next(iter(runs.values()))
    scratch = {"run": "from scratch (same architecture)"}
    for f in args.fractions:
        scratch[f"ft_{f:g}"] = finetune(first, f, f"scratch-ft{f:g}", "--scratch")["top1"]
    rows.append(scratch)

    distilled = None
    if args.teacher:
        f = args.teacher_fraction
        layers = args.teacher_head_layers
        tag = f"{args.teacher}-ft{f:g}" + (f"-head{layers}" if layers else "")
        distilled = siamkit(
            "eval", "distill", "--teacher", str(out / tag), "--output",
            str(out / f"{tag}-student"), "--epochs", str(args.distill_epochs),
        )  # fmt: skip

    metrics = {name: siamkit("eval", "metrics", "--checkpoint", run) for name, run in runs.items()}

    def cell(row: dict[str, Any], key: str) -> str:
        return f"{row[key]:.2f}" if key in row else ""

    head = ["run", "kNN", "linear h", "linear g(h)"]
    keys = ["knn", "linear_backbone", "linear_projection"]
    for f in args.fractions:
        head.append(f"fine-tune {f:.0%}")
        keys.append(f"ft_{f:g}")
        if args.teacher:
            head.append(f"fine-tune {f:.0%} from head layer {args.teacher_head_layers}")
            keys.append(f"ft_{f:g}_head")
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for row in rows:
        lines.append("| " + " | ".join([row["run"], *(cell(row, k) for k in keys)]) + " |")
    lines += [
        "",
        "| run | rep. | dim | collapse std | RankMe | alignment | uniformity |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in metrics.items():
        for key, rep in (("h", "h"), ("g", "g(h)")):
            v = m[key]
            lines.append(
                f"| {name} | {rep} | {v['dim']} | {v['collapse_std']:.3f} | {v['rankme']:.1f} | "
                f"{v['alignment']:.3f} | {v['uniformity']:.3f} |"
            )
    print("\n" + "\n".join(lines))
    if distilled:
        print(
            f"\ndistillation ({args.distill_epochs} epochs, same-size student): teacher "
            f"{distilled['teacher_top1']:.2f} -> student {distilled['student_top1']:.2f} "
            f"(agreement {distilled['agreement']:.1f}%)"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
