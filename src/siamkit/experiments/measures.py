"""Taking a measure of a finished cell: read from its run, or computed by a protocol.

Every measure (:data:`siamkit.registry.MEASURES`) is a function of the cell's run
folder (and the experiment's folder, for the shared labelled subsets): the pretraining figures
come from ``results.json`` and ``metrics.csv``, the others from the protocols that the CLI's
``eval`` commands run (linear probe, fine-tuning, distillation), so an experiment's figure is
the figure a user gets by hand.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from siamkit import registry
from siamkit.errors import DataError
from siamkit.experiments.spec import Cell, Measure, ScaleSpec

#: Folder of an experiment's labelled subsets, shared by every cell of the experiment.
SPLITS_DIR = "splits"


def run_results(run: Path) -> dict[str, Any]:
    """A finished pretraining run's ``results.json``."""
    path = run / "results.json"
    if not path.is_file():
        raise DataError(f"{run} has no results.json: its pretraining has not finished")
    results: dict[str, Any] = json.loads(path.read_text())
    return results


def final_loss(run: Path) -> float:
    """Mean training loss of the last logged epoch."""
    from siamkit.analysis.plots import epoch_means, read_metrics_csv

    means = epoch_means(read_metrics_csv(run / "metrics.csv").get("train/loss", []))
    if not means:
        raise DataError(f"{run}/metrics.csv logged no training loss")
    return means[max(means)]


def take(
    measure: Measure,
    cell: Cell,
    run: Path,
    root: Path,
    scale: str,
    spec: ScaleSpec,
    seed: int = 0,
) -> float:
    """The value of ``measure`` for ``cell`` run with ``seed``.

    The reader is the one :data:`siamkit.registry.MEASURES` registers for ``measure.kind``.

    Args:
        measure: What to take.
        cell: The cell.
        run: The cell's folder for that seed (its pretraining run, or its estimate's folder).
        root: The experiment's folder (labelled subsets shared by its cells).
        scale: The scale the experiment runs at (the measure's epochs for it).
        spec: That scale's settings.
        seed: The seed (of a Gaussian estimate; a pretraining run's is in its config).
    """
    read = registry.MEASURES[measure.kind].load()
    assert callable(read)  # every reader takes the arguments of take
    value = read(measure, cell, run, root, scale, spec, seed)
    assert isinstance(value, float)
    return value


def read_result(
    measure: Measure, cell: Cell, run: Path, root: Path, scale: str, spec: ScaleSpec, seed: int
) -> float:
    """A figure of the run's ``results.json``: kNN, its random init and gain, collapse std."""
    kind = measure.kind
    results = run_results(run)
    trained, random = results.get("knn_top1"), results.get("random_init_knn_top1")
    value = {
        "knn": trained,
        "random_init_knn": random,
        "knn_gain": None if trained is None or random is None else trained - random,
        "collapse_std": results.get("collapse_std"),
    }[kind]
    if value is None:
        raise DataError(f"{run}/results.json has no figure for {kind} (unlabelled data?)")
    return float(value)


def read_final_loss(
    measure: Measure, cell: Cell, run: Path, root: Path, scale: str, spec: ScaleSpec, seed: int
) -> float:
    """Mean training loss of the run's last logged epoch."""
    return final_loss(run)


def read_eval_collapse_std(
    measure: Measure, cell: Cell, run: Path, root: Path, scale: str, spec: ScaleSpec, seed: int
) -> float:
    """Collapse std of g(h) on held-out images in eval mode.

    The training monitor reads the projection output in train mode, where an output BatchNorm
    gives every channel its batch std whatever the network does: a collapsing network puts most
    images at one point and a few far off, and the std keeps a floor of about 2/sqrt(batch). In
    eval mode (running statistics) on held-out images the collapse shows in full
    (benchmarks/simsiam_collapse.py measures both).
    """
    from siamkit.analysis.run_eval import representation_metrics

    return float(representation_metrics(run)["g"]["collapse_std"])


def read_linear(
    measure: Measure, cell: Cell, run: Path, root: Path, scale: str, spec: ScaleSpec, seed: int
) -> float:
    """Linear-probe top-1 on the run's frozen features (``measure.features``)."""
    from siamkit.analysis.run_eval import linear_eval

    epochs = measure.epochs.get(scale) or 100
    return float(linear_eval(run, features=measure.features, epochs=epochs)["top1"])


def read_finetune(
    measure: Measure, cell: Cell, run: Path, root: Path, scale: str, spec: ScaleSpec, seed: int
) -> float:
    """Fine-tuning top-1 of the run (or of its architecture from scratch)."""
    return _finetune(measure, run, root, measure.epochs.get(scale))


def read_distill(
    measure: Measure, cell: Cell, run: Path, root: Path, scale: str, spec: ScaleSpec, seed: int
) -> float:
    """Top-1 of a student distilled from the run's fine-tuned teacher."""
    return _distill(measure, run, measure.epochs.get(scale))


def read_gaussian_mi(
    measure: Measure, cell: Cell, run: Path, root: Path, scale: str, spec: ScaleSpec, seed: int
) -> float:
    """The held-out MI estimate of the cell's correlated Gaussians (:func:`gaussian_estimate`)."""
    return gaussian_estimate(measure, cell, spec, seed)


def _finetune(measure: Measure, run: Path, root: Path, epochs: int | None) -> float:
    """Fine-tune the cell's checkpoint (or its architecture from scratch) on a labelled share."""
    from siamkit.checkpoints import read_checkpoint
    from siamkit.data.datasets import load_splits
    from siamkit.data.splits import dataset_name, default_index_path
    from siamkit.supervised.finetune import FinetuneConfig, finetune

    config = read_checkpoint(run).config
    splits = load_splits(config.data, say=False)  # the run's data, said when it trained
    cfg = FinetuneConfig(
        epochs=epochs,
        label_fraction=measure.label_fraction,
        from_head_layers=measure.from_head_layers,
    )
    # One labelled subset per fraction for the whole experiment, as the CLI keeps one per data
    # set: every cell and the scratch baseline train on the same images.
    name = default_index_path(dataset_name(config.data), len(splits.train), cfg.label_fraction, 0)
    scratch = measure.kind == "finetune_scratch"
    result = finetune(
        data=config.data,
        cfg=cfg,
        checkpoint=None if scratch else run,
        index_file=root / SPLITS_DIR / name.name,
        backbone=config.backbone,
        augment=config.augment,
        output=run / "measures" / measure.name,
        splits=splits,
        overwrite=True,
    )
    return float(result.top1)


def _distill(measure: Measure, run: Path, epochs: int | None) -> float:
    """Distil the cell's fine-tuned teacher (measure ``measure.teacher``) into a student."""
    from siamkit.supervised.classifier import load_classifier
    from siamkit.supervised.distill import DistillConfig, distill

    teacher = run / "measures" / measure.teacher
    _, info = load_classifier(teacher)
    student = info.backbone
    if measure.student_width is not None:
        student = replace(student, width=measure.student_width)
    cfg = DistillConfig(epochs=epochs) if epochs else DistillConfig()
    result = distill(
        teacher,
        cfg=cfg,
        student_backbone=student,
        output=run / "measures" / measure.name,
        overwrite=True,
    )
    return float(result.student_top1)


def gaussian_estimate(measure: Measure, cell: Cell, spec: ScaleSpec, seed: int = 0) -> float:
    """The held-out MI estimate of the cell's correlated Gaussians with ``seed``.

    The statistics network and its training are those of ``benchmarks/mine_gaussian.py``
    (:func:`siamkit.eval.known_mi.validation_settings`).
    """
    from siamkit.eval.known_mi import estimate, gaussian_sampler, validation_settings

    batch = spec.mi_infonce_batch if measure.estimator == "infonce" else spec.mi_batch
    settings = validation_settings(measure.estimator, spec.mi_steps, batch)
    return estimate(gaussian_sampler(cell.dim, cell.rho), settings, seed)


__all__ = [
    "SPLITS_DIR",
    "final_loss",
    "gaussian_estimate",
    "read_distill",
    "read_eval_collapse_std",
    "read_final_loss",
    "read_finetune",
    "read_gaussian_mi",
    "read_linear",
    "read_result",
    "run_results",
    "take",
]
