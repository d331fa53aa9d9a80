"""What a pretraining run produced, and its summary as the command line prints it."""

from __future__ import annotations

from dataclasses import dataclass, field

from siamkit.config import TrainConfig


@dataclass
class PretrainResult:
    """What a pretraining run produced.

    Attributes:
        output_dir: The run folder.
        checkpoint: Path of the last checkpoint.
        epochs: Epochs completed.
        knn_top1: Final kNN top-1 (%) on the held-out split (``None`` without labels).
        random_init_knn_top1: The same for the backbone at its random initialisation.
        collapse_std: Final collapse metric (about 1 healthy, 0 collapsed).
        collapse_threshold: Below this the run is reported as collapsing.
        images_per_sec: Training throughput of the last epoch (steps and waits for data).
        data_wait: Share of that time spent waiting for data (0 when the loader keeps up).
        minutes: Wall-clock time of the whole call.
        knn_history: ``(epoch, top-1)`` of the monitor.
        mi_history: ``(epoch, nats)`` of the two-view MI estimate (``train.mi_every``).
        online_probe_top1: Held-out top-1 (%) of the online linear probe, if it was on.
        storage: How the training images were held, and why.
    """

    output_dir: str
    checkpoint: str | None
    epochs: int
    knn_top1: float | None = None
    random_init_knn_top1: float | None = None
    collapse_std: float | None = None
    collapse_threshold: float = TrainConfig.collapse_threshold
    images_per_sec: float | None = None
    data_wait: float | None = None
    minutes: float = 0.0
    knn_history: list[tuple[int, float]] = field(default_factory=list)
    mi_history: list[tuple[int, float]] = field(default_factory=list)
    online_probe_top1: float | None = None
    storage: str = ""


def format_result(result: PretrainResult) -> str:
    """Human summary of a run, as the CLI prints it."""
    lines = [f"epochs: {result.epochs}   time: {result.minutes:.1f} min"]
    if result.images_per_sec:
        lines[0] += f"   throughput: {result.images_per_sec:.0f} images/s"
        if result.data_wait is not None and result.data_wait >= 0.05:
            lines[0] += f" ({result.data_wait:.0%} of it waiting for data)"
    if result.collapse_std is not None:
        state = "collapsing" if result.collapse_std < result.collapse_threshold else "healthy"
        lines.append(f"collapse metric (std x sqrt(d)): {result.collapse_std:.3f} ({state})")
    if result.knn_top1 is not None and result.random_init_knn_top1 is not None:
        lines.append(
            f"kNN top-1: {result.knn_top1:.2f}% trained | {result.random_init_knn_top1:.2f}% "
            f"random init | {result.knn_top1 - result.random_init_knn_top1:+.2f} points"
        )
    if result.online_probe_top1 is not None:
        lines.append(f"online linear probe top-1: {result.online_probe_top1:.2f}% (held-out)")
    if result.checkpoint:
        lines.append(f"checkpoint: {result.checkpoint}")
    return "\n".join(lines)


__all__ = ["PretrainResult", "format_result"]
