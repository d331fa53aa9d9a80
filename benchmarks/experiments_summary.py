"""The summary of every experiment's claims: one row per claim, from the experiments' folders.

Reads ``<runs>/<name>-<scale>/results.json`` of each experiment of the catalogue that has run and
prints a Markdown table: the claim, its paper and source, what siamkit measured at that scale
(mean +- std over the seeds, with their number), its verdict (reproduced, contradicted or
inconclusive, by the rule of :mod:`siamkit.experiments.claims`), the smallest difference the
seeds could resolve beside the paper's, and for a claim not reproduced, the note written for that
scale. Then the counts, the rule and how many claims were tested at which level. With ``--docs``
it also copies each experiment's ``report.md`` and curves there (``NAME.md``, ``NAME.png``) and
writes the page as its ``README.md``.

    .venv/bin/python benchmarks/experiments_summary.py --docs docs/experiments
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import Counter
from pathlib import Path

from siamkit.experiments import experiment_names, load_experiment
from siamkit.experiments.report import RULE
from siamkit.experiments.statistics import ALPHA

VERDICTS = ("reproduced", "contradicted", "inconclusive", "not measured", "not tested")


def _resolution(outcome: dict) -> str:
    threshold, paper = outcome.get("threshold"), outcome.get("paper_difference")
    if threshold is None:
        return ""
    shown = f"{threshold:.2f}"
    return shown + (f" (paper {paper:+.2f})" if paper is not None else "")


#: What the cpu scale is, written before the runs (no measured figure: those are in the table).
ABOUT_CPU = """What the CPU scale is, and what it is not:

- **SimSiam's ablations, BYOL's normalisation and the method comparison run on the bundled
  digits** (small CNN, 20 epochs of 11 steps at batch 128, a run in about a minute), 3 seeds a
  cell. Digits is an easy set: a random-init encoder already reads most digits by kNN, so the
  gains are a few points and a difference must clear the seeds' spread to count.
- **SimCLR, SimCLRv2, VICReg and Barlow Twins run on CIFAR-10** (ResNet-18 at a quarter width,
  16-px crops tested at 32 px, a few epochs), 2 seeds a cell.
- **MINE's estimators run on correlated Gaussians** of known MI, as in the paper, 3 seeds a cell.
- kNN top-1 on held-out images stands in for the papers' ImageNet linear top-1: directions
  compare, values do not. A claim *inconclusive* at this scale says the seeds could not resolve
  its difference (the threshold column, beside the paper's difference); `--scale gpu` (CIFAR-10,
  ResNet-18, 200 epochs a cell, single GPU) is the next step for those."""


def readme(rows: list[str], counts: Counter[str], tested: int, missing: list[str],
           machines: set[str], scale: str) -> str:  # fmt: skip
    """docs/experiments/README.md: how they ran, the rule, the counts, the table.

    ``tested`` counts the claims judged by t tests (collapse claims are not).
    """
    lines = [
        f"# The papers' experiments at {scale.upper()} scale",
        "",
        "Each experiment was run with",
        "",
        "```bash",
        f"siamkit experiment NAME --scale {scale} --output runs/experiments/NAME-{scale} --resume",
        "```",
        "",
        "(`bash scripts/run_experiments.sh` runs them all in turn) on "
        + ("; ".join(sorted(machines)) or "no machine yet")
        + ". Each report (`NAME.md`, curves in `NAME.png`) is in this folder, with the paper's "
        "figure beside every measured mean +- std (n) and each report's date and wall time. This "
        "page was written by `python benchmarks/experiments_summary.py --docs docs/experiments`.",
        "",
    ]
    if scale == "cpu":
        lines += [ABOUT_CPU, ""]
    lines += [
        "## Verdicts",
        "",
        ", ".join(f"**{counts[v]} {v}**" for v in VERDICTS) + ".",
        "",
        f"{RULE} {tested} claims were judged by t tests, each at level {ALPHA:g} either way: if "
        f"none of their effects existed, up to {2 * ALPHA * tested:.1f} of them would still read "
        "as reproduced or contradicted by chance.",
        "",
    ]
    if missing:
        lines += [
            "Not yet run under this rule: "
            + ", ".join(missing)
            + ". A report of theirs in this folder, if any, is from the one-seed runs of "
            "2026-12-03, judged by direction alone (a rule that counted some claims reproduced "
            "on figures that contradict them): do not read its verdicts.",
            "",
        ]
    lines += [
        "| experiment | claim | paper | siamkit at this scale | verdict | resolvable difference "
        "(paper's) | why not, and what would show it |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs/experiments", help="the experiments' folders")
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--docs", help="copy each report.md and its PNG here")
    args = parser.parse_args()
    runs = Path(args.runs)
    rows: list[str] = []
    counts: Counter[str] = Counter()
    tested = 0
    missing: list[str] = []
    machines: set[str] = set()
    for name in experiment_names():
        results_file = runs / f"{name}-{args.scale}" / "results.json"
        results = json.loads(results_file.read_text()) if results_file.is_file() else {}
        if "alpha" not in results:  # not run, or run before the seeds and the noise rule
            print(f"<!-- {name}: not run at {args.scale} scale under the noise rule -->")
            missing.append(name)
            continue
        experiment = load_experiment(name)
        machines.add(results.get("machine", "an unrecorded machine"))
        if args.docs:
            docs = Path(args.docs)
            docs.mkdir(parents=True, exist_ok=True)
            shutil.copy(results_file.parent / "report.md", docs / f"{name}.md")
            shutil.copy(results_file.parent / f"{name}.png", docs / f"{name}.png")
        by_text = {c["text"]: c for c in results["claims"]}
        for claim in experiment.claims:
            outcome = by_text.get(claim.text)
            if outcome is None:  # a claim added or reworded since the run
                counts["not measured"] += 1
                rows.append(f"| [{name}]({name}.md) | {claim.text} | {claim.source} | not in "
                            "this run's results: run it again with --resume | **not measured** "
                            "| | |")  # fmt: skip
                continue
            verdict = outcome["verdict"]
            counts[verdict] += 1
            judged = verdict in ("reproduced", "contradicted", "inconclusive")
            tested += judged and claim.check.kind not in ("collapsed", "healthy")
            why = "" if verdict == "reproduced" else claim.notes.get(args.scale, "")
            rows.append(
                f"| [{name}]({name}.md) | {claim.text} | {claim.source} | {outcome['detail']} | "
                f"**{verdict}** | {_resolution(outcome)} | {why} |"
            )
    text = readme(rows, counts, tested, missing, machines, args.scale)
    print(text)
    if args.docs:
        (Path(args.docs) / "README.md").write_text(text)


if __name__ == "__main__":
    main()
