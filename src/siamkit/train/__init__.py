"""The one training loop (Lightning), its schedule, monitors and checkpoints."""

from siamkit.train.checkpoint import load_backbone, load_method, read_checkpoint
from siamkit.train.loop import PretrainModule, PretrainResult, format_result, pretrain

__all__ = [
    "PretrainModule",
    "PretrainResult",
    "format_result",
    "load_backbone",
    "load_method",
    "pretrain",
    "read_checkpoint",
]
