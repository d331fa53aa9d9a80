"""The one training loop (Lightning), its schedule and monitors."""

from siamkit.train.loop import PretrainModule, PretrainResult, format_result, pretrain

__all__ = ["PretrainModule", "PretrainResult", "format_result", "pretrain"]
