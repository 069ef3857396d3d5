"""Metrics MONAI and Ignite lack, beside theirs: scalar multi-class classification metrics."""

from .classification import METRIC_NAMES, MulticlassMetric, classification_metrics, confusion_matrix

__all__ = ["METRIC_NAMES", "MulticlassMetric", "classification_metrics", "confusion_matrix"]
