"""Evaluation of frozen representations: kNN, linear probe, metrics, export."""

# The functions finetune() and distill() are not re-exported here: they would shadow their
# modules (siamkit.eval.finetune, siamkit.eval.distill); import them from those modules.
from siamkit.eval.distill import DistillConfig, DistillResult
from siamkit.eval.export import export_backbone, load_exported
from siamkit.eval.features import extract_features
from siamkit.eval.finetune import Classifier, FinetuneConfig, FinetuneResult, load_classifier
from siamkit.eval.knn import knn_accuracy, knn_predict
from siamkit.eval.linear import LinearProbeResult, linear_probe
from siamkit.eval.metrics import alignment, output_std, rankme, uniformity
from siamkit.eval.plots import save_png, training_curves, tsne_plot
from siamkit.eval.report import write_report
from siamkit.eval.representation import projection_features, representation_metrics
from siamkit.eval.splits import default_index_path, label_subset, subset_indices

__all__ = [
    "LinearProbeResult",
    "alignment",
    "export_backbone",
    "extract_features",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "load_exported",
    "output_std",
    "projection_features",
    "rankme",
    "representation_metrics",
    "save_png",
    "training_curves",
    "tsne_plot",
    "uniformity",
    "write_report",
]
__all__ += ["Classifier", "FinetuneConfig", "FinetuneResult", "load_classifier"]
__all__ += ["DistillConfig", "DistillResult"]
__all__ += ["default_index_path", "label_subset", "subset_indices"]
