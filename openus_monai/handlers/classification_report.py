"""``ClassificationReport``: an evaluator's per-image predictions to CSV and, with labels, its metrics and
confusion matrix."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.metrics import ROCAUCMetric
from monai.networks.utils import one_hot
from monai.utils import optional_import

from ..data.checked_readers import source_path
from ..metrics.classification import METRIC_NAMES, MulticlassMetric, confusion_matrix

__all__ = ["ClassificationReport"]

logger = logging.getLogger(__name__)


def _finite_or_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _source(item: Mapping[str, Any], batch_item: Mapping[str, Any] | None, key: str) -> str:
    for source in (item, batch_item or {}):
        value = source.get(key) if isinstance(source, Mapping) else None
        name = source_path(value, "")
        if name:
            return name
        if isinstance(value, str):
            return value
    return "<unknown>"


class ClassificationReport:
    """Ignite handler for an evaluator: per-image predictions to CSV and, with labels, the metrics.

    At the end of each run it writes to ``output_dir``:

    - ``predictions.csv``: ``image``, ``label`` (true class name, when the data have labels),
      ``prediction`` (class name), then ``prob_<class>`` per class;
    - with labels: ``metrics.json`` (``accuracy``, ``macro_f1``, ``auc`` (one-vs-rest, macro; null when a
      class is absent), ``balanced_accuracy``, ``n_images``), ``classification_report.csv`` (precision,
      recall, F1, support per class, and the macro average), ``confusion_matrix.csv`` and
      ``confusion_matrix.png`` (with matplotlib; skipped with a warning without it).

    Metrics are computed with the same MONAI metrics as the evaluator's (:class:`MulticlassMetric`,
    ``ROCAUCMetric``) on exactly the predictions written.

    Args:
        output_dir: folder to write to (created).
        class_names: class names in index order.
        pred_key: key of the class probabilities ``[C]`` in the engine's (decollated) output.
        label_key: key of the label (one-hot ``[C]`` or an index); absent or None for unlabeled data.
        image_key: key whose ``meta["filename_or_obj"]`` names the image.
        prefix: prepended to every file name.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str],
        pred_key: str = "pred",
        label_key: str = "label",
        image_key: str = "image",
        prefix: str = "",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = [str(c) for c in class_names]
        self.pred_key, self.label_key, self.image_key, self.prefix = pred_key, label_key, image_key, prefix
        self._rows: list[tuple[str, int | None, np.ndarray]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self._rows = []

    def collect(self, engine: Engine) -> None:
        outputs = engine.state.output
        batch = engine.state.batch
        if isinstance(outputs, Mapping):
            raise ValueError("ClassificationReport needs decollated outputs (an evaluator with decollate=True)")
        batch_items = batch if isinstance(batch, (list, tuple)) else [None] * len(outputs)
        n = len(self.class_names)
        for item, batch_item in zip(outputs, batch_items):
            prob = torch.as_tensor(item[self.pred_key]).detach().float().cpu().reshape(-1)
            if prob.numel() != n:
                raise ValueError(f"{self.pred_key} has {prob.numel()} values but there are {n} classes {self.class_names}")
            label = item.get(self.label_key)
            if label is not None:
                label = torch.as_tensor(label).detach().cpu()
                label = int(label.reshape(-1).argmax()) if label.numel() == n and n > 1 else int(label.reshape(-1)[0])
            self._rows.append((_source(item, batch_item, self.image_key), label, prob.numpy()))

    def _path(self, name: str) -> Path:
        return self.output_dir / f"{self.prefix}{name}"

    def write(self, engine: Engine | None = None) -> dict[str, Any] | None:
        """Write the files; returns the metrics (None without labels)."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        names, rows = self.class_names, self._rows
        labeled = bool(rows) and all(r[1] is not None for r in rows)
        with open(self._path("predictions.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["image", *(["label"] if labeled else []), "prediction", *(f"prob_{c}" for c in names)])
            for image, label, prob in rows:
                pred = names[int(np.argmax(prob))]
                writer.writerow([image, *([names[label]] if labeled else []), pred, *(f"{p:.9g}" for p in prob)])
        logger.info("wrote %d predictions to %s", len(rows), self._path("predictions.csv"))
        if not labeled:
            return None
        metrics = self._metrics(rows)
        with open(self._path("metrics.json"), "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=4)
            f.write("\n")
        labels = [r[1] for r in rows]
        preds = [int(np.argmax(r[2])) for r in rows]
        cm = confusion_matrix(labels, preds, len(names))
        self._write_report(cm)
        self._write_confusion(cm)
        logger.info("metrics on %d images: %s", len(rows), {k: v for k, v in metrics.items() if k != "n_images"})
        return metrics

    def _metrics(self, rows: list[tuple[str, int | None, np.ndarray]]) -> dict[str, Any]:
        n = len(self.class_names)
        probs = torch.as_tensor(np.stack([r[2] for r in rows]))
        labels = one_hot(torch.as_tensor([r[1] for r in rows]).reshape(-1, 1), n, dim=1)
        result: dict[str, Any] = {}
        for name in METRIC_NAMES:
            metric = ROCAUCMetric(average="macro") if name == "auc" else MulticlassMetric(name)
            metric(probs, labels)
            result[name] = _finite_or_none(float(metric.aggregate()))
        result["n_images"] = len(rows)
        return result

    def _write_report(self, cm: np.ndarray) -> None:
        tp = np.diag(cm).astype(np.float64)
        support, predicted = cm.sum(1), cm.sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(predicted > 0, tp / predicted, 0.0)
            recall = np.where(support > 0, tp / support, 0.0)
            f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
        present = (support + predicted) > 0
        with open(self._path("classification_report.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "precision", "recall", "f1", "support"])
            for i, name in enumerate(self.class_names):
                writer.writerow([name, f"{precision[i]:.6f}", f"{recall[i]:.6f}", f"{f1[i]:.6f}", int(support[i])])
            if present.any():
                writer.writerow(["macro avg", f"{precision[present].mean():.6f}", f"{recall[present].mean():.6f}",
                                 f"{f1[present].mean():.6f}", int(support.sum())])

    def _write_confusion(self, cm: np.ndarray) -> None:
        names = self.class_names
        with open(self._path("confusion_matrix.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["true \\ predicted", *names])
            for name, row in zip(names, cm):
                writer.writerow([name, *map(int, row)])
        figure, has_mpl = optional_import("matplotlib.figure", name="Figure")
        if not has_mpl:
            logger.warning("matplotlib is not installed: %s not written", self._path("confusion_matrix.png"))
            return
        size = 1.2 + 0.9 * len(names)
        fig = figure(figsize=(size + 1.0, size))  # no pyplot: no global state, no GUI backend
        ax = fig.subplots()
        image = ax.imshow(cm, cmap="Blues")
        fig.colorbar(image, ax=ax, fraction=0.046)
        ax.set(xticks=range(len(names)), yticks=range(len(names)), xlabel="predicted", ylabel="true", title="confusion matrix")
        ax.set_xticklabels(names, rotation=45, ha="right")
        ax.set_yticklabels(names)
        threshold = cm.max() / 2 if cm.size else 0
        for (i, j), value in np.ndenumerate(cm):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > threshold else "black")
        fig.tight_layout()
        fig.savefig(self._path("confusion_matrix.png"), dpi=100)
