"""A self-contained HTML report of a pretraining run.

``<run>/report/report.html`` holds everything inline: the plots as base64 PNG data URIs, the
run's config, its results.json (kNN of the trained backbone against its random initialisation)
and the representation metrics of h and g(h). It loads no script, style sheet, font or image
from anywhere, so it can be mailed or archived alone. The PNGs and the metrics (as JSON) are
written beside it for other uses.
"""

from __future__ import annotations

import datetime
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from siamkit.analysis.html import img, page, table
from siamkit.analysis.plots import save_png, training_curves, tsne_plot
from siamkit.analysis.run_eval import metric_images
from siamkit.checkpoints import load_method
from siamkit.config import DataConfig, RunConfig
from siamkit.errors import CheckpointError, ConfigError
from siamkit.eval.features import extract_features
from siamkit.eval.representation import method_metrics
from siamkit.safe_io import atomic_write_text, read_user_text, staged_folder

if TYPE_CHECKING:  # matplotlib is imported when a figure is made
    from matplotlib.figure import Figure

    from siamkit.data.loader import ImageData
    from siamkit.methods import Method

#: Rows of the representation metrics table: key, name, what a better value looks like.
METRIC_ROWS = (
    ("dim", "dimension D", ""),
    ("collapse_std", "collapse std x sqrt(D) [arXiv:2011.10566]", "about 1; 0 = collapsed"),
    ("rankme", "RankMe effective rank [arXiv:2210.02885]", "higher; at most min(N, D)"),
    ("alignment", "alignment of two views [arXiv:2005.10242]", "lower; 0 = identical"),
    ("uniformity", "uniformity, t = 2 [arXiv:2005.10242]", "lower; 0 = collapsed"),
)


def _results_section(results: dict[str, Any] | None) -> str:
    if results is None:
        return '<p class="note">No results.json (the run has not finished).</p>'
    parts = []
    trained, random = results.get("knn_top1"), results.get("random_init_knn_top1")
    if isinstance(trained, (int, float)) and isinstance(random, (int, float)):
        parts.append(
            f"<p><b>kNN top-1: {trained:.2f}% trained vs {random:.2f}% at random "
            f"initialisation ({trained - random:+.2f} points).</b></p>"
        )
    rows = [[k, v] for k, v in results.items() if k not in ("knn_history", "mi_history")]
    parts.append(table(["key", "value"], rows))
    history = results.get("knn_history")
    if history:
        parts.append("<p>kNN top-1 (%) per epoch:</p>")
        parts.append(table(["epoch", "kNN top-1"], [list(r) for r in history]))
    mi_history = results.get("mi_history")
    if mi_history:
        parts.append("<p>Two-view mutual information of h (MINE, nats) per epoch:</p>")
        parts.append(table(["epoch", "I(h(v1); h(v2))"], [list(r) for r in mi_history]))
    return "".join(parts)


def _metrics_section(metrics: dict[str, Any]) -> str:
    rows = [
        [name, metrics["h"][key], metrics["g"][key], better] for key, name, better in METRIC_ROWS
    ]
    shown = table(["metric", "h (backbone)", "g(h) (projection)", "better"], rows)
    return (
        f"<p>On {metrics['num_images']} {metrics['split']} images: centre views for collapse "
        "std, RankMe and uniformity; two augmented views (the run's recipe) for alignment.</p>"
        + shown
    )


def write_report(
    run_dir: str | Path,
    data: DataConfig | None = None,
    tsne_images: int = 2000,
    max_images: int = 5000,
    seed: int = 0,
    device: torch.device | None = None,
) -> Path:
    """Write ``<run_dir>/report/report.html``, a self-contained report of a pretraining run.

    Steps: training curves from ``metrics.csv``; the checkpoint's representation metrics of h
    and g(h) (:func:`siamkit.eval.representation.method_metrics`); a t-SNE map of h coloured
    by class; then one HTML page with the plots inlined as base64 PNGs, the run's config.yaml
    and results.json. The PNGs and ``representation.json`` are written beside it.

    Args:
        run_dir: The run folder of ``siamkit pretrain`` (metrics.csv, config.yaml,
            checkpoints/last.ckpt, results.json).
        data: Images to measure on (default: the run's own data; test split where there is one).
        tsne_images: Points in the t-SNE map (a seeded random subset).
        max_images: Images for the representation metrics.
        seed: Seed of the subsets, the augmented views and t-SNE.
        device: Where features are computed (default: the CPU).

    Returns:
        The path of report.html.

    Raises:
        ConfigError: ``tsne_images`` below 4 or ``max_images`` below 2.
        CheckpointError: No run folder, no metrics.csv in it, a damaged run file (named), or
            no readable checkpoint.
    """
    if tsne_images < 4 or max_images < 2:
        raise ConfigError(
            f"tsne_images must be >= 4 and max_images >= 2, got {tsne_images} and {max_images}"
        )
    # 1. Every input is read and checked before anything is written: a damaged run file is a
    #    message that names it, and no half-made report is left.
    run = Path(run_dir)
    _check_run_folder(run)
    curves = training_curves(run / "metrics.csv")
    config_text, results = _run_files(run)
    cfg, method = load_method(run)

    # 2. Representation metrics of h and g(h), and a t-SNE map of h.
    method.to(device or torch.device("cpu"))
    images, split = metric_images(data or cfg.data, max(max_images, tsne_images), seed)
    metrics = _representation(method, cfg, images, split, max_images, seed)
    tsne = _tsne_of_h(method, cfg, images, tsne_images, seed)

    # 3. The page and its files, built beside the report folder and renamed into place.
    out = run / "report"
    with staged_folder(out, "report") as stage:
        pngs = {
            "training curves": save_png(curves, stage / "curves.png"),
            f"t-SNE of h ({split} images)": save_png(tsne, stage / "tsne.png"),
        }
        text = json.dumps(metrics, indent=2) + "\n"
        atomic_write_text(stage / "representation.json", text, "metrics")
        title = f"siamkit run {run.resolve().name}: {cfg.method.name}, {cfg.backbone.name}"
        body = _report_body(pngs, results, metrics, config_text)
        atomic_write_text(stage / "report.html", page(title, body), "report")
    return out / "report.html"


def _check_run_folder(run: Path) -> None:
    """Refuse a ``run`` that is no folder, or one without the metrics.csv of a pretraining run."""
    if not run.is_dir():
        raise CheckpointError(
            f"run folder {str(run)!r} not found; pass the --output folder of a "
            "`siamkit pretrain` run"
        )
    if not (run / "metrics.csv").is_file():
        raise CheckpointError(
            f"{str(run)!r} has no metrics.csv, so it is not a pretraining run folder (or the run "
            "has not logged a step yet); pass the --output folder of a `siamkit pretrain` run"
        )


def _representation(
    method: Method, cfg: RunConfig, images: ImageData, split: str, max_images: int, seed: int
) -> dict[str, Any]:
    """The representation metrics of h and g(h) on the first ``max_images`` of ``images``."""
    first = torch.arange(min(max_images, len(images)))
    metrics = method_metrics(method, images.subset(first), cfg.augment, seed)
    metrics["split"] = split
    return metrics


def _tsne_of_h(
    method: Method, cfg: RunConfig, images: ImageData, tsne_images: int, seed: int
) -> Figure:
    """A t-SNE map of h on the first ``tsne_images`` of ``images``, coloured by class."""
    shown = images.subset(torch.arange(min(tsne_images, len(images))))
    backbone = method.backbone
    h = extract_features(backbone, shown, cfg.augment)  # (N, D)
    return tsne_plot(h, shown.labels, images.classes, max_points=tsne_images, seed=seed)


def _report_body(
    pngs: dict[str, Path],
    results: dict[str, Any] | None,
    metrics: dict[str, Any],
    config_text: str,
) -> str:
    """The page's body: a stamp, the results, the metrics, the plots inline and the config."""
    figures = "".join(f"<h2>{html.escape(k)}</h2>{img(p, k)}" for k, p in pngs.items())
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    return (
        f'<p class="note">Written {stamp} with torch {html.escape(torch.__version__)}.</p>'
        f"<h2>Results</h2>{_results_section(results)}"
        f"<h2>Representation metrics</h2>{_metrics_section(metrics)}"
        f"{figures}"
        f"<h2>Config</h2><pre>{html.escape(config_text or '(no config.yaml)')}</pre>"
    )


def _run_files(run: Path) -> tuple[str, dict[str, Any] | None]:
    """The run's config.yaml text and results.json, each checked (either may be absent).

    Raises:
        CheckpointError: A file that is not UTF-8 text, or a results.json that is not JSON.
    """
    fix = "the run folder is damaged: restore the file, or delete it (the report goes without)"
    config_file, results_file = run / "config.yaml", run / "results.json"
    config_text = ""
    if config_file.is_file():
        config_text = read_user_text(config_file, "run file", CheckpointError, fix)
    results = None
    if results_file.is_file():
        text = read_user_text(results_file, "run file", CheckpointError, fix)
        try:
            results = json.loads(text)
        except ValueError as err:
            raise CheckpointError(f"{results_file} is not valid JSON ({err}); {fix}") from None
        if not isinstance(results, dict):
            raise CheckpointError(f"{results_file} holds no mapping of results; {fix}")
    return config_text, results
