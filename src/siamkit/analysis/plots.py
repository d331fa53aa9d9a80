"""Figures of a run: training curves from its metrics.csv, and a t-SNE map of its features.

Figures are built with matplotlib's object-oriented API (``matplotlib.figure.Figure`` drawn by
the Agg canvas when saved): no pyplot state and no display are involved, so this works on
headless machines and in parallel tests.
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from siamkit.errors import CheckpointError, ConfigError, DataError

if TYPE_CHECKING:  # matplotlib is imported when a figure is made, not with siamkit.eval
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Columns of Lightning's CSVLogger file that the curves show, with their panel titles.
CURVES = (
    ("train/loss", "training loss"),
    ("val/knn_top1", "kNN top-1 (%)"),
    ("train/collapse_std", "collapse std x sqrt(d)"),
)
#: Curves drawn only when the run logged them (``train.mi_every``).
OPTIONAL_CURVES = (("val/mi_two_view", "two-view MI, MINE (nats)"),)


def read_metrics_csv(path: Path) -> dict[str, list[tuple[int, int, float]]]:
    """The logged values of a Lightning CSVLogger file, per column.

    Args:
        path: ``metrics.csv`` with columns ``epoch``, ``step`` and one per metric; each row fills
            only the metrics logged at that step, the others are empty.

    Returns:
        For every metric column, its ``(epoch, step, value)`` rows in file order (empty cells
        left out).

    Raises:
        CheckpointError: The file is missing, is not CSV text, has no ``epoch``/``step``
            columns, or holds a value that is not a number (a run folder's file, damaged).
    """
    if not path.is_file():
        raise CheckpointError(
            f"no training log at {path}; pass the folder of a `siamkit pretrain` run "
            "(it holds metrics.csv, config.yaml and checkpoints/)"
        )
    fix = "the run's training log is damaged: pass another run, or run it again"
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as err:
        raise CheckpointError(f"{path} is not a CSV training log ({err}); {fix}") from None
    columns = list(rows[0].keys()) if rows else []
    if "epoch" not in columns or "step" not in columns:
        raise CheckpointError(
            f"{path} is not a Lightning CSVLogger file (no epoch/step columns, or no rows yet); "
            "pass the metrics.csv of a `siamkit pretrain` run that has logged a step"
        )
    out: dict[str, list[tuple[int, int, float]]] = {
        c: [] for c in columns if c not in ("epoch", "step") and c is not None
    }
    for line, row in enumerate(rows, start=2):
        try:
            for col, values in out.items():
                cell = row.get(col)
                if cell not in (None, ""):
                    values.append((int(row["epoch"]), int(row["step"]), float(cell)))
        except (TypeError, ValueError):
            raise CheckpointError(
                f"{path}, line {line}: a value that is not a number; {fix}"
            ) from None
    return out


def epoch_means(rows: list[tuple[int, int, float]]) -> dict[int, float]:
    """Epoch -> the mean of the values logged in it, epochs in order.

    Args:
        rows: ``(epoch, step, value)`` of one column of :func:`read_metrics_csv`.
    """
    by_epoch: dict[int, list[float]] = {}
    for epoch, _, value in rows:
        by_epoch.setdefault(epoch, []).append(value)
    return {e: statistics.fmean(by_epoch[e]) for e in sorted(by_epoch)}


def epoch_positions(epochs: list[int], steps: list[int]) -> dict[int, tuple[int, int]]:
    """For every epoch, the step before it began and its last step (from the logged rows)."""
    last: dict[int, int] = {}
    for e, s in zip(epochs, steps, strict=True):
        last[e] = max(s, last.get(e, s))
    bounds, previous = {}, -1
    for e in sorted(last):
        bounds[e] = (previous, last[e])
        previous = last[e]
    return bounds


def _not_logged(ax: Axes, column: str) -> None:
    ax.text(0.5, 0.5, f"{column}\nnot logged", ha="center", va="center", transform=ax.transAxes)


def training_curves(metrics_csv: Path) -> Figure:
    """Loss, kNN top-1 and collapse std over epochs, one panel each.

    Epoch-end metrics are drawn at ``epoch + 1`` (after that many epochs, as ``knn_history``
    in results.json counts them). The per-step loss is drawn at fractional epochs, step ``s``
    of epoch ``e`` at ``e + (s - first) / (last - first)``, with its per-epoch mean on top. A
    metric the run did not log (kNN monitor off, an older log) leaves its panel with a note.

    Args:
        metrics_csv: ``<run>/metrics.csv`` written by Lightning's CSVLogger.

    Returns:
        A figure with one axes per entry of :data:`CURVES`, in that order, then one per entry
        of :data:`OPTIONAL_CURVES` that the run logged.
    """
    from matplotlib.figure import Figure

    logged = read_metrics_csv(Path(metrics_csv))
    all_rows = [r for values in logged.values() for r in values]
    bounds = epoch_positions([r[0] for r in all_rows], [r[1] for r in all_rows])
    curves = CURVES + tuple(c for c in OPTIONAL_CURVES if logged.get(c[0]))
    fig = Figure(figsize=(4.2 * len(curves), 3.4), layout="constrained")
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (column, title) in zip(axes, curves, strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        rows = logged.get(column, [])
        if not rows:
            _not_logged(ax, column)
            continue
        if column == "train/loss":
            x = [e + (s - bounds[e][0]) / max(1, bounds[e][1] - bounds[e][0]) for e, s, _ in rows]
            ax.plot(x, [v for *_, v in rows], lw=0.8, alpha=0.5, label="per step")
            means = epoch_means(rows)
            ax.plot([e + 1 for e in means], list(means.values()), "o-", label="epoch mean")
            ax.legend(fontsize="small")
        else:
            ax.plot([e + 1 for e, *_ in rows], [v for *_, v in rows], "o-")
    return fig


def tsne_plot(
    features: torch.Tensor,
    labels: torch.Tensor | None,
    classes: list[str] | None = None,
    max_points: int = 2000,
    seed: int = 0,
    perplexity: float = 30.0,
    threads: int | None = 1,
) -> Figure:
    """A 2-D t-SNE map of features, one colour (and legend entry) per class.

    Features are l2-normalised first, so distances in the map follow the cosine similarity that
    the kNN monitor uses. t-SNE [van der Maaten & Hinton, JMLR 2008] is run by scikit-learn with
    PCA initialisation and a fixed ``random_state``, which makes the map reproducible and keeps
    the global layout more faithful than a random start [Kobak & Linderman, Nat. Biotechnol.
    2021].

    Args:
        features: ``(N, D)`` features.
        labels: ``(N,)`` int labels, or ``None`` (one colour).
        classes: Class names, index = label (default: the label numbers).
        max_points: At most this many points, a random subset drawn with ``seed``.
        seed: Seed of the subset and of t-SNE.
        perplexity: t-SNE perplexity (30, scikit-learn's default), lowered to ``(n - 1) / 3``
            for small n.
        threads: OpenMP threads of the Barnes-Hut t-SNE (``None``: scikit-learn's choice). One
            by default: on busy cores its spin-waiting threads made a 120-point map ten times
            slower (90 s instead of 8 s on a shared 2-core machine).

    Returns:
        A figure with one axes holding one scatter collection per class present.
    """
    from matplotlib.figure import Figure
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = int(features.shape[0])
    if features.dim() != 2 or n < 4:
        raise DataError(
            f"t-SNE needs (N, D) features of at least 4 images, got shape "
            f"{tuple(features.shape)}; use more images"
        )
    if max_points < 4:
        raise ConfigError(f"max_points must be at least 4, got {max_points}")
    if labels is None:
        labels = torch.zeros(n, dtype=torch.long)
        classes = ["all images"]
    if n > max_points:
        keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points]
        features, labels, n = features[keep], labels[keep], max_points
    x = F.normalize(features.double(), dim=1).numpy()
    tsne = TSNE(
        n_components=2,
        perplexity=min(perplexity, (n - 1) / 3),
        init="pca",
        random_state=seed,
    )
    with threadpool_limits(limits=threads, user_api="openmp"):
        xy = tsne.fit_transform(x)  # (n, 2)
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = fig.subplots()
    present = sorted(set(labels.tolist()))
    colours = _class_colours(len(present))
    for colour, c in zip(colours, present, strict=True):
        mask = (labels == c).numpy()
        name = classes[c] if classes is not None and c < len(classes) else str(c)
        ax.scatter(xy[mask, 0], xy[mask, 1], s=6, color=colour, label=name, alpha=0.8)
    ax.set_title(f"t-SNE of {n} images")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize="small",
        markerscale=2,
        ncols=max(1, math.ceil(len(present) / 20)),
    )
    return fig


def _class_colours(k: int) -> list[tuple[float, float, float, float]]:
    """``k`` distinct colours: tab10/tab20 where they suffice, else evenly spaced hues."""
    from matplotlib import colormaps

    if k <= 10:
        return [colormaps["tab10"](i) for i in range(k)]
    if k <= 20:
        return [colormaps["tab20"](i) for i in range(k)]
    return [colormaps["hsv"](i / k) for i in range(k)]


def save_png(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG (creating the folder) and return its path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=dpi)
    return out
