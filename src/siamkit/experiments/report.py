"""An experiment's reports: ``report.md`` and a self-contained ``report.html``, with its curves.

Both hold the same content: the table (the paper's figure beside the measured mean +- std over
the seeds, with their number, per cell and measure), the claims with their verdicts in three
outcomes (reproduced, contradicted, inconclusive; :mod:`siamkit.experiments.claims` states the
rule), the curves per cell (loss, kNN and collapse metric over epochs, the mean over the seeds
with their spread as error bars; for Gaussian cells the estimates against the truth), and how
the run was made. The curves are ``<name>.png`` beside the reports, so the
Markdown report and its figure can be copied together (``docs/experiments/``).
"""

from __future__ import annotations

import datetime
import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siamkit.analysis.html import img, page, table
from siamkit.analysis.plots import epoch_means, read_metrics_csv, save_png
from siamkit.experiments.results import ExperimentResult
from siamkit.experiments.spec import Cell, Experiment
from siamkit.experiments.statistics import ALPHA, mean, std
from siamkit.safe_io import atomic_write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value)


def table_rows(experiment: Experiment, result: ExperimentResult) -> tuple[list[str], list[list]]:
    """The header and rows of the results table.

    Each measure that has a paper figure for any cell gets two columns, the paper's and the
    measured; the others one. A last column gives each cell's minutes.
    """
    cells = {c.name: c for c in experiment.cells}
    with_paper = [
        m for m in experiment.measures if any(m.name in cells[r.name].paper for r in result.cells)
    ]
    header, columns = ["cell"], []
    for m in experiment.measures:
        if m not in with_paper:
            header.append(m.header)
            columns.append((m.name, False))
            continue
        header += [
            "paper" if len(with_paper) == 1 else f"paper, {m.header}",
            f"siamkit: {m.header}",
        ]
        columns += [(m.name, True), (m.name, False)]
    header.append("minutes")
    rows = []
    for r in result.cells:
        cell = cells[r.name]
        row: list[Any] = [r.name + (" *" if _own_source(cell) or cell.note else "")]
        for name, paper in columns:
            if paper:
                figure = cell.paper.get(name)
                value = None if figure is None else figure.value
                row.append(f"{value:g}" if isinstance(value, float) else _number(value))
            else:
                row.append(r.shown(name))
        row.append(f"{r.minutes:.1f}")
        rows.append(row)
    return header, rows


def _own_source(cell: Cell) -> str:
    return "; ".join(f"{k}: {f.source}" for k, f in cell.paper.items() if f.source)


def _footnotes(experiment: Experiment, result: ExperimentResult) -> list[str]:
    ran = {r.name for r in result.cells}
    notes = []
    for cell in experiment.cells:
        if cell.name not in ran:
            continue
        parts = [p for p in (_own_source(cell), cell.note) if p]
        if parts:
            notes.append(f"{cell.name}: {' '.join(parts)}")
    return notes


def _claims(experiment: Experiment, result: ExperimentResult) -> list[tuple[str, str, str]]:
    """``(verdict, claim with its source, detail and note)`` per claim.

    A claim not reproduced gets the note written for this scale (prose written before the run,
    no measured figure; a note of another scale is not shown).
    """
    out: list[tuple[str, str, str]] = []
    for claim, outcome in zip(experiment.claims, result.claims, strict=True):
        text = claim.text + (f" [{claim.source}]" if claim.source else "")
        detail = outcome.detail
        note = claim.notes.get(result.scale, "")
        if outcome.verdict != "reproduced" and note:
            detail += f". Written for the {result.scale} scale: {note}"
        out.append((outcome.verdict, text, detail))
    return out


#: The verdicts' rule in one paragraph (reports and docs/experiments print it).
RULE = (
    "Verdicts: reproduced when every contrast of the claim is beyond noise in the paper's "
    f"direction (a one-sided t test at level {ALPHA:g}: Welch's test on the seeds' values, "
    "paired for measures of the same runs, a single-seed cell's variance from the noise floor); "
    "contradicted when one is beyond noise the other way (Bonferroni over the claim's "
    "contrasts), an advantage that a claim about a gap needs shown reversed included; "
    "inconclusive otherwise, and where the seeds agree exactly (no measure of the noise). "
    "Equivalences are two one-sided tests against the stated tolerance. 'called at X from the "
    "bound' is the test's critical distance: a true difference that large is called half the "
    f"time. Tested both ways, a claim with no true effect reads beyond noise with a chance of up "
    f"to {2 * ALPHA:g}. Collapse claims need every seed of every cell on the claimed side of a "
    "threshold fixed before the run (contradicted: every seed of some cell on the other side), "
    "and a collapse against a reference cell healthy on every seed."
)


def rule(result: ExperimentResult) -> str:
    """The verdicts' rule, with this run's noise floors."""
    floors = "; ".join(
        f"{m}: sigma {f.std:.2f} from {f.seeds} seeds of {f.cell!r}"
        for m, f in result.floors.items()
    )
    return RULE + (f" Noise floors: {floors}." if floors else "")


def curves(experiment: Experiment, result: ExperimentResult) -> Figure:
    """One line per cell: loss, kNN top-1 and collapse metric per epoch (or MI against truth)."""
    from matplotlib.figure import Figure

    cells = {c.name: c for c in experiment.cells}
    ran = [cells[r.name] for r in result.cells]
    if all(c.kind == "gaussian_mi" for c in ran):
        return _gaussian_curves(experiment, result)
    panels = (
        ("train/loss", "training loss (epoch mean)"),
        ("val/knn_top1", "kNN top-1 (%)"),
        ("train/collapse_std", "collapse std x sqrt(d), training (train mode)"),
    )
    fig = Figure(figsize=(13.5, 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels))
    for r in result.cells:
        per_seed = [Path(r.folder) / f"seed-{s}" / "metrics.csv" for s in r.seeds]
        logged = [read_metrics_csv(p) for p in per_seed if p.is_file()]
        if not logged:
            continue
        for ax, (column, _) in zip(axes, panels, strict=True):
            curves = [epoch_means(seed.get(column, [])) for seed in logged]
            epochs = sorted(set.intersection(*(set(c) for c in curves)))
            ys = [[c[e] for c in curves] for e in epochs]  # per epoch: one value per seed
            spread = [std(y) if len(y) > 1 else 0.0 for y in ys]
            ax.errorbar([e + 1 for e in epochs], [mean(y) for y in ys], yerr=spread, fmt="o-",
                        ms=3, capsize=2, label=f"{r.name} ({len(logged)})")  # fmt: skip
    for ax, (_, title) in zip(axes, panels, strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="x-small")
    fig.suptitle(f"{experiment.title} ({result.scale} scale)")
    return fig


def _gaussian_curves(experiment: Experiment, result: ExperimentResult) -> Figure:
    """Estimates against rho, one panel per dimension, the true MI as a line."""
    from matplotlib.figure import Figure

    from siamkit.eval.known_mi import gaussian_mi

    cells = {c.name: c for c in experiment.cells}
    dims = sorted({cells[r.name].dim for r in result.cells})
    fig = Figure(figsize=(5.2 * len(dims), 3.8), layout="constrained")
    axes = fig.subplots(1, len(dims), squeeze=False)[0]
    for ax, dim in zip(axes, dims, strict=True):
        points = sorted(
            (cells[r.name].rho, r.values) for r in result.cells if cells[r.name].dim == dim
        )
        rhos = [p[0] for p in points]
        ax.plot(rhos, [gaussian_mi(dim, rho) for rho in rhos], "k--", label="true MI")
        for m in experiment.measures:
            seeds = [v.get(m.name) or [float("nan")] for _, v in points]
            ax.errorbar(rhos, [mean(s) for s in seeds],
                        yerr=[std(s) if len(s) > 1 else 0.0 for s in seeds], fmt="o-", capsize=2,
                        label=m.header)  # fmt: skip
        ax.set_title(f"{dim}-d Gaussians")
        ax.set_xlabel("rho")
        ax.set_ylabel("nats")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def _markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _how(experiment: Experiment, result: ExperimentResult) -> list[str]:
    spec = experiment.scale(result.scale)
    lines = [
        f"Paper: {experiment.citation}. Its figures: {experiment.paper_metric}"
        + (f" ({experiment.source})" if experiment.source else "")
        + ".",
        # An experiment whose cells pretrain nothing (MINE's Gaussians) names no recipe.
        (
            f"siamkit at the {result.scale} scale: recipe `{spec.recipe}`"
            + (f" with `{' '.join(spec.set)}`" if spec.set else "")
            + f", each cell's overrides on top; {_seeds(result)}."
            if spec.recipe
            else f"siamkit at the {result.scale} scale, {_seeds(result)}:"
        )
        + (f" {spec.note}" if spec.note else ""),
        rule(result),
        f"Machine: {result.machine}. Written "
        f"{datetime.date.today().isoformat()} by `siamkit experiment {experiment.name} "
        f"--scale {result.scale}`; {sum(c.minutes for c in result.cells):.1f} minutes of "
        "wall time in all.",
    ]
    return lines


def _seeds(result: ExperimentResult) -> str:
    counts = sorted({len(c.seeds) for c in result.cells})
    if len(counts) == 1:
        return f"{counts[0]} seed{'s' if counts[0] > 1 else ''} a cell"
    return f"{counts[0]} to {counts[-1]} seeds a cell (the noise floor's cell the most)"


def write_reports(experiment: Experiment, result: ExperimentResult) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` and ``<name>.png`` into the experiment's folder."""
    out = Path(result.output)
    png = save_png(curves(experiment, result), out / f"{experiment.name}.png")
    header, rows = table_rows(experiment, result)
    notes = _footnotes(experiment, result)
    claims = _claims(experiment, result)
    how = _how(experiment, result)

    paper_line = f"Paper: {experiment.paper_metric}."
    md = [f"# {experiment.title}", "", experiment.about, "", "## Results", ""]
    md += [_markdown_table(header, rows), "", paper_line, ""]
    md += [f"\\* {n}" for n in notes] + ([""] if notes else [])
    md += ["## Claims", ""]
    md += [f"- **{verdict}**: {text}  \n  {detail}" for verdict, text, detail in claims]
    md += ["", "## Curves", "", f"![{experiment.name}]({png.name})", "", "## How", ""]
    md += [f"- {line}" for line in how]
    md_path = out / "report.md"
    atomic_write_text(md_path, "\n".join(md) + "\n", "report")

    body = f"<p>{html.escape(experiment.about)}</p><h2>Results</h2>{table(header, rows)}"
    body += f'<p class="note">{html.escape(paper_line)}</p>'
    body += "".join(f'<p class="note">* {html.escape(n)}</p>' for n in notes)
    body += "<h2>Claims</h2><ul>" + "".join(
        f"<li><b>{html.escape(v)}</b>: {html.escape(t)}<br>"
        f'<span class="note">{html.escape(d)}</span></li>'
        for v, t, d in claims
    )
    body += f"</ul><h2>Curves</h2>{img(png, experiment.name)}<h2>How</h2><ul>"
    body += "".join(f"<li>{html.escape(line)}</li>" for line in how) + "</ul>"
    html_path = out / "report.html"
    atomic_write_text(html_path, page(experiment.title, body), "report")
    return md_path, html_path


__all__ = ["RULE", "curves", "rule", "table_rows", "write_reports"]
