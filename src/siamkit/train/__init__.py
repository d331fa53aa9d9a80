"""The one training loop (Lightning), its schedule and monitors."""

from siamkit.train.loop import PretrainModule
from siamkit.train.pretraining import RandomInitKNN, pretrain
from siamkit.train.results import PretrainResult, format_result

__all__ = ["PretrainModule", "PretrainResult", "RandomInitKNN", "format_result", "pretrain"]
