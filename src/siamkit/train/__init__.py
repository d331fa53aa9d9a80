"""The one training loop (Lightning), its schedule and monitors."""

from siamkit.train.loop import PretrainModule, pretrain
from siamkit.train.results import PretrainResult, format_result

__all__ = ["PretrainModule", "PretrainResult", "format_result", "pretrain"]
