"""Metrics of representation quality and collapse for pretraining monitors."""

from .representation import collapse_diagnostics, knn_accuracy, linear_probe_accuracy

__all__ = ["collapse_diagnostics", "knn_accuracy", "linear_probe_accuracy"]
