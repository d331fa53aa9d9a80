"""Evaluation of frozen representations: kNN, linear probe, metrics, export."""

from siamkit.eval.export import export_backbone, load_exported
from siamkit.eval.features import extract_features
from siamkit.eval.knn import knn_accuracy, knn_predict
from siamkit.eval.linear import LinearProbeResult, linear_probe
from siamkit.eval.metrics import output_std

__all__ = [
    "LinearProbeResult",
    "export_backbone",
    "extract_features",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "load_exported",
    "output_std",
]
