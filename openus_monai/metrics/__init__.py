"""Metrics MONAI and Ignite lack, beside theirs: scalar multi-class classification metrics; representation
quality and collapse diagnostics for pretraining monitors."""

from .classification import METRIC_NAMES, MulticlassMetric, classification_metrics, confusion_matrix
from .representation import collapse_diagnostics, knn_accuracy, linear_probe_accuracy

__all__ = [
    "METRIC_NAMES",
    "MulticlassMetric",
    "classification_metrics",
    "collapse_diagnostics",
    "confusion_matrix",
    "knn_accuracy",
    "linear_probe_accuracy",
]
