"""Scalar multi-class classification metrics on MONAI's confusion counts.

MONAI gives the per-class confusion counts (``get_confusion_matrix``), the per-class F1 / sensitivity
(``compute_confusion_matrix_metric``) and the ROC AUC (``ROCAUCMetric``); Ignite gives the
``[K, K]`` confusion matrix (``ignite.metrics.ConfusionMatrix``). What they lack, and is written here, is a
single scalar multi-class accuracy, macro-F1 or balanced accuracy as a MONAI cumulative metric
(MONAI's ``ConfusionMatrixMetric`` gives per-class values or micro averages, and its "accuracy" is the
per-class binary one).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ignite.metrics import ConfusionMatrix
from monai.metrics import CumulativeIterationMetric, compute_confusion_matrix_metric, get_confusion_matrix
from monai.networks.utils import one_hot

__all__ = ["METRIC_NAMES", "MulticlassMetric", "classification_metrics", "confusion_matrix"]

#: the metrics a classification evaluation reports (``metrics.json``, with ``n_images``)
METRIC_NAMES: tuple[str, ...] = ("accuracy", "macro_f1", "auc", "balanced_accuracy")


def _nanmean(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else float("nan")


def classification_metrics(cm: torch.Tensor) -> dict[str, float]:
    """Accuracy, macro-F1 and balanced accuracy from per-class ``[C, 4]`` counts ``(tp, fp, tn, fn)``.

    As scikit-learn: macro-F1 averages F1 over the classes that occur in the labels or predictions;
    balanced accuracy averages recall over the classes that occur in the labels.

    Args:
        cm: ``[C, 4]`` counts summed over images (MONAI's ``get_confusion_matrix`` layout).

    Returns:
        ``{"accuracy", "macro_f1", "balanced_accuracy"}`` (NaN when undefined).
    """
    cm = cm.double()
    total = float((cm[:, 0] + cm[:, 3]).sum())
    return {
        "accuracy": float(cm[:, 0].sum()) / total if total else float("nan"),
        "macro_f1": _nanmean(compute_confusion_matrix_metric("f1 score", cm)),
        "balanced_accuracy": _nanmean(compute_confusion_matrix_metric("sensitivity", cm)),
    }


def _as_index(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[B, C]`` scores or one-hot -> ``[B, 1]`` argmax; ``[B]`` or ``[B, 1]`` indices -> ``[B, 1]``."""
    if y.ndim == 2 and y.shape[1] == num_classes and num_classes > 1:
        return y.argmax(1, keepdim=True)
    return y.reshape(-1, 1).long()


class MulticlassMetric(CumulativeIterationMetric):
    """Multi-class accuracy, macro-F1 or balanced accuracy as one scalar, from MONAI's confusion matrix.

    Args:
        metric_name: ``"accuracy"``, ``"macro_f1"`` or ``"balanced_accuracy"``.

    ``y_pred``: ``[B, C]`` logits, probabilities or one-hot (argmax is taken); ``y``: ``[B, C]`` one-hot or
    ``[B]``/``[B, 1]`` indices. Lists of per-sample tensors (decollated batches) work too. Use with
    ``monai.handlers.IgniteMetricHandler(metric_fn=MulticlassMetric("macro_f1"), output_transform=...)``;
    in distributed runs the confusion counts are gathered over ranks like any MONAI cumulative metric.
    """

    NAMES = ("accuracy", "macro_f1", "balanced_accuracy")

    def __init__(self, metric_name: str = "macro_f1") -> None:
        super().__init__()
        if metric_name not in self.NAMES:
            raise ValueError(f"metric_name must be one of {self.NAMES}, got {metric_name!r}")
        self.metric_name = metric_name

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if y is None:
            raise ValueError("MulticlassMetric needs labels y")
        if y_pred.ndim != 2:
            raise ValueError(f"y_pred must be [B, C] class scores, got shape {list(y_pred.shape)}")
        n = y_pred.shape[1]
        pred = one_hot(y_pred.argmax(1, keepdim=True), n, dim=1)
        target = one_hot(_as_index(y, n).to(y_pred.device), n, dim=1)
        return get_confusion_matrix(pred, target, include_background=True)  # [B, C, 4]

    def aggregate(self) -> float:  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor) or data.numel() == 0:
            return float("nan")
        return classification_metrics(data.sum(0))[self.metric_name]


def confusion_matrix(labels: Sequence[int], preds: Sequence[int], num_classes: int) -> np.ndarray:
    """The ``[K, K]`` confusion counts (Ignite's ``ConfusionMatrix``): rows = true class, columns = predicted.

    Args:
        labels: true class indices, one per image.
        preds: predicted class indices, one per image.
        num_classes: ``K``.

    Returns:
        ``[K, K]`` int64 counts.
    """
    metric = ConfusionMatrix(num_classes=num_classes, device="cpu")
    if len(labels):
        pred = torch.as_tensor(np.asarray(preds, dtype=np.int64))
        metric.update((one_hot(pred.reshape(-1, 1), num_classes, dim=1), torch.as_tensor(np.asarray(labels, dtype=np.int64))))
        return metric.compute().numpy().astype(np.int64)
    return np.zeros((num_classes, num_classes), dtype=np.int64)
