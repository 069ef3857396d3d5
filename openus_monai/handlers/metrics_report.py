"""``MetricsReport``: per-image metrics to CSV and their summary to JSON, for evaluation runs.

MONAI's ``MetricsSaver`` writes one file per metric; the bundles here promise one table
(``metrics.csv``: a row per image, a column per metric) and one summary (``metrics.json``) that tools
such as the label-efficiency study read. This handler writes those two from the per-image values
MONAI's metric handlers already keep in ``engine.state.metric_details``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from ..data.checked_readers import source_path

__all__ = ["MetricsReport"]

logger = logging.getLogger(__name__)


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


class MetricsReport:
    """Write ``metrics.csv`` (one row per image) and ``metrics.json`` (means) when an evaluator finishes.

    Per image: ``image`` and ``label`` (the files), ``has_foreground`` (whether the reference mask has any
    foreground), then one column per metric. The summary holds, per metric, the mean over images where it
    is finite (``NaN``/``inf``, e.g. HD95 with an empty mask, are left out and ``n_<metric>`` counts the
    rest when fewer), ``<metric>_nonempty`` (the mean over images with foreground), ``n_images`` and
    ``n_nonempty``, plus ``extra`` entries given by the config.

    Attach to a ``SupervisedEvaluator`` *after* its metrics (put it in ``val_handlers``). Single-process
    evaluation only.

    Args:
        output_dir: folder of the two files (created).
        metrics: ``{column name: engine metric name}``, e.g. ``{"dice": "val_mean_dice"}``; each engine
            metric must keep details (``save_details=True``, MONAI's default).
        image_key: key of the image in the batch (its file is listed).
        label_key: key of the reference mask in the output (its file is listed; one-hot or class map).
        details_file: name of the per-image table.
        summary_file: name of the summary.
        extra: constant entries added to the summary (e.g. the split evaluated).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        metrics: Mapping[str, str],
        image_key: str = "image",
        label_key: str = "label",
        details_file: str = "metrics.csv",
        summary_file: str = "metrics.json",
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.metrics = dict(metrics)
        self.image_key, self.label_key = image_key, label_key
        self.details_file, self.summary_file = details_file, summary_file
        self.extra = dict(extra or {})
        self._rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._rows = []

    def _collect(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        if not isinstance(output, list):
            raise TypeError("MetricsReport needs decollated engine outputs (MONAI workflows with decollate=True)")
        batch = batch if isinstance(batch, list) else [{}] * len(output)
        for item_in, item_out in zip(batch, output):
            image = item_in.get(self.image_key, item_out.get(self.image_key))
            label = item_out.get(self.label_key, item_in.get(self.label_key))
            in_label = item_in.get(self.label_key)
            fg = None
            if isinstance(label, torch.Tensor):
                fg = bool(label[1:].any()) if label.ndim >= 3 and label.shape[0] > 1 else bool((label > 0).any())
            self._rows.append({
                "image": source_path(image, ""),
                "label": source_path(in_label if in_label is not None else label, ""),
                "has_foreground": fg,
            })

    def _write(self, engine: Engine) -> None:
        details = getattr(engine.state, "metric_details", {}) or {}
        n = len(self._rows)
        for column, name in self.metrics.items():
            if name not in details:
                raise KeyError(f"MetricsReport: metric '{name}' has no per-image details (known: {sorted(details)})")
            values = torch.as_tensor(details[name]).float().reshape(n, -1) if n else torch.zeros(0, 1)
            if values.shape[0] != n:
                raise ValueError(f"MetricsReport: '{name}' has {values.shape[0]} per-image values for {n} images")
            per_image = torch.nanmean(values, dim=1) if values.shape[1] > 1 else values[:, 0]
            for row, v in zip(self._rows, per_image.tolist()):
                row[column] = v
        summary: dict[str, Any] = {}
        for column in self.metrics:
            values = [r[column] for r in self._rows]
            summary[column] = _mean(values)
            finite = sum(math.isfinite(v) for v in values)
            if finite < n:
                summary[f"n_{column}"] = finite
            # the mean over images with foreground, where images without any have values of their own
            # (Dice, IoU: 1 or 0); not for metrics undefined there (HD95), whose mean is that already
            if any(r["has_foreground"] is False and math.isfinite(r[column]) for r in self._rows):
                summary[f"{column}_nonempty"] = _mean([r[column] for r in self._rows if r["has_foreground"]])
        summary["n_images"] = n
        if any(r["has_foreground"] is not None for r in self._rows):
            summary["n_nonempty"] = sum(bool(r["has_foreground"]) for r in self._rows)
        summary.update(self.extra)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        columns = ["image", "label", "has_foreground", *self.metrics]
        with open(self.output_dir / self.details_file, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self._rows)
        with open(self.output_dir / self.summary_file, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=4)
            f.write("\n")
        engine.state.metrics_summary = summary  # for in-process callers
        logger.info("metrics of %d images written to %s: %s", n, self.output_dir / self.summary_file, summary)
