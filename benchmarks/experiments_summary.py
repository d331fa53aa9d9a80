"""The summary of every experiment's claims: one row per claim, from the experiments' folders.

Reads ``<runs>/<name>-<scale>/results.json`` of each experiment of the catalogue that has run and
prints a Markdown table: the claim, its paper and source, what siamkit measured at that scale,
whether its direction was reproduced, and for the ones that were not, the claim's note (what the
scale cannot show and what would). Also copies each experiment's ``report.md`` and curves into
``--docs`` (``docs/experiments/NAME.md`` and ``NAME.png``).

    .venv/bin/python benchmarks/experiments_summary.py --docs docs/experiments
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from siamkit.experiments import experiment_names, load_experiment

MARKS = {True: "yes", False: "no", None: "not measured"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs/experiments", help="the experiments' folders")
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--docs", help="copy each report.md and its PNG here")
    args = parser.parse_args()
    runs = Path(args.runs)
    rows, counts = [], {True: 0, False: 0, None: 0}
    for name in experiment_names():
        results_file = runs / f"{name}-{args.scale}" / "results.json"
        if not results_file.is_file():
            print(f"<!-- {name}: not run at {args.scale} scale -->")
            continue
        experiment = load_experiment(name)
        results = json.loads(results_file.read_text())
        if args.docs:
            docs = Path(args.docs)
            docs.mkdir(parents=True, exist_ok=True)
            shutil.copy(results_file.parent / "report.md", docs / f"{name}.md")
            shutil.copy(results_file.parent / f"{name}.png", docs / f"{name}.png")
        for claim, outcome in zip(experiment.claims, results["claims"], strict=True):
            counts[outcome["reproduced"]] += 1
            why = "" if outcome["reproduced"] else claim.note
            rows.append(
                f"| [{name}]({name}.md) | {claim.text} | {claim.source} | {outcome['detail']} | "
                f"{MARKS[outcome['reproduced']]} | {why} |"
            )
    print("| experiment | claim | paper | siamkit at this scale | reproduced | why not, and what "
          "would show it |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print(f"\n{counts[True]} claims reproduced in direction, {counts[False]} not, "
          f"{counts[None]} not measured.")  # fmt: skip


if __name__ == "__main__":
    main()
