"""The measures of frozen representations: features, kNN, linear probe, metrics, online probe.

What is built on them for a checkpoint lives in :mod:`siamkit.analysis` (its figures, the
report), :mod:`siamkit.supervised` (fine-tuning, distillation) and :mod:`siamkit.export`.
"""

from siamkit.eval.features import extract_features, iter_features
from siamkit.eval.knn import knn_accuracy, knn_predict, knn_top1
from siamkit.eval.linear import LinearProbeResult, linear_probe
from siamkit.eval.metrics import alignment, output_std, rankme, uniformity
from siamkit.eval.representation import method_metrics, projection_features

__all__ = [
    "LinearProbeResult",
    "alignment",
    "extract_features",
    "iter_features",
    "knn_accuracy",
    "knn_predict",
    "knn_top1",
    "linear_probe",
    "method_metrics",
    "output_std",
    "projection_features",
    "rankme",
    "uniformity",
]
