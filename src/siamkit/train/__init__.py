"""The one training loop (Lightning), its schedule and monitors."""

from siamkit.train.loop import PretrainModule
from siamkit.train.pretrain_result import PretrainResult, format_result
from siamkit.train.pretraining import RandomInitKNN, pretrain

__all__ = ["PretrainModule", "PretrainResult", "RandomInitKNN", "format_result", "pretrain"]
