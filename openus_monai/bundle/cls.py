"""What the classification bundle (``bundles/openus_cls``) calls from its configs.

MONAI provides the reading, transforms, engines, checkpointing and the AUC; written here is what it
lacks for multi-class classification with named classes:

- class names <-> indices for datalists (:func:`encode_labels`), and kept in checkpoints
  (:class:`ClassNames`, :func:`read_class_names`) so predictions come back as names;
- class balancing: loss weights and a weighted sampler (:func:`class_weights`, :func:`balanced_sampler`);
- scalar multi-class accuracy, macro-F1 and balanced accuracy as a MONAI metric (:class:`MulticlassMetric`,
  built on MONAI's confusion matrix; MONAI's ``ConfusionMatrixMetric`` gives per-class values or
  micro averages, and its "accuracy" is the per-class binary one);
- an Ignite handler writing predictions, ``metrics.json``, a per-class report and the confusion matrix
  (:class:`ClassificationReport`);
- the image list for inference (:func:`inference_datalist`).
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

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric, ROCAUCMetric, compute_confusion_matrix_metric, get_confusion_matrix
from monai.networks.utils import one_hot
from monai.utils import optional_import

from openus_monai.data import build_datalist, scan_class_folders, scan_image_folder

Engine, _ = optional_import("ignite.engine", name="Engine")
Events, _ = optional_import("ignite.engine", name="Events")

__all__ = [
    "BALANCE_MODES",
    "METRIC_NAMES",
    "ClassNames",
    "ClassificationReport",
    "MulticlassMetric",
    "balanced_sampler",
    "class_weights",
    "classification_metrics",
    "confusion_matrix",
    "encode_labels",
    "inference_datalist",
    "labeled_split",
    "pick_metrics",
    "read_class_names",
]

logger = logging.getLogger(__name__)

#: ``class_balance`` options: nothing, inverse-frequency loss weights, or a class-balanced sampler
BALANCE_MODES: tuple[str, ...] = ("none", "loss", "sampler")
#: the metrics written to ``metrics.json`` (with ``n_images``)
METRIC_NAMES: tuple[str, ...] = ("accuracy", "macro_f1", "auc", "balanced_accuracy")


# ----------------------------------------------------------------------------------------------- labels


def encode_labels(entries: Sequence[Mapping[str, Any]], class_names: Sequence[str], require_labels: bool = True) -> list[dict]:
    """Datalist entries with ``label`` as the class index into ``class_names``.

    Args:
        entries: ``{"image", "label": class name}`` entries (from :func:`~openus_monai.data.build_datalist`).
        class_names: the classes, in index order (from the data set, or from a checkpoint).
        require_labels: raise on an entry without a label; otherwise such entries keep only ``image``.

    Returns:
        new entries ``{"image": path, "label": int}`` (other keys kept).

    Raises:
        ValueError: a label is not one of ``class_names``, or is missing while required (names the image).
    """
    index = {str(name): i for i, name in enumerate(class_names)}
    out = []
    for entry in entries:
        entry = dict(entry)
        label = entry.get("label")
        if label is None or label == "":
            if require_labels:
                raise ValueError(f"{entry.get('image')}: no class label; every training/validation/test image needs one")
            entry.pop("label", None)
        elif str(label) not in index:
            raise ValueError(f"{entry.get('image')}: class {label!r} is not one of the model's classes {list(class_names)}")
        else:
            entry["label"] = index[str(label)]
        out.append(entry)
    return out


def labeled_split(datalist: Mapping[str, Any], split: str, class_names: Sequence[str]) -> list[dict]:
    """The entries of ``datalist[split]`` encoded with :func:`encode_labels`, which must be non-empty.

    Args:
        datalist: the output of :func:`~openus_monai.data.build_datalist` for classification.
        split: ``"training"``, ``"validation"`` or ``"test"``.
        class_names: the classes in index order.

    Raises:
        ValueError: the split is empty (says how to provide it), or an entry has no or an unknown label.
    """
    entries = datalist.get(split) or []
    if not entries:
        raise ValueError(
            f"the data set has no {split} images; give them in labels.csv (split column: train/val/test), in "
            f"datalist.json ('{split}' list) or as {split}/CLASS/ folders (validation is otherwise held out of training)"
        )
    return encode_labels(entries, class_names)


def _class_counts(entries: Sequence[Mapping[str, Any]], num_classes: int) -> np.ndarray:
    labels = [int(e["label"]) for e in entries if e.get("label") is not None]
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]


def _check_balance(class_balance: str) -> str:
    if class_balance not in BALANCE_MODES:
        raise ValueError(f"class_balance must be one of {BALANCE_MODES}, got {class_balance!r}")
    return class_balance


def class_weights(
    entries: Sequence[Mapping[str, Any]],
    num_classes: int,
    device: str | torch.device | None = None,
    class_balance: str = "loss",
) -> torch.Tensor | None:
    """Inverse-frequency weights ``N / (K * n_c)`` for ``CrossEntropyLoss(weight=...)``, or None.

    Args:
        entries: encoded training entries (``label`` an int).
        num_classes: ``K``.
        device: where the weights live (the loss's device).
        class_balance: the bundle's option; weights only for ``"loss"``, None otherwise.

    Returns:
        ``[K]`` float tensor (a class without training images gets weight 1), or None.
    """
    if _check_balance(class_balance) != "loss":
        return None
    counts = _class_counts(entries, num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 1.0)
    logger.info("class weights for the loss: %s (counts %s)", np.round(weights, 3).tolist(), counts.astype(int).tolist())
    return torch.as_tensor(weights, dtype=torch.float32, device=device)


def balanced_sampler(
    entries: Sequence[Mapping[str, Any]], num_classes: int, class_balance: str = "sampler", seed: int = 0
) -> torch.utils.data.WeightedRandomSampler | None:
    """A sampler drawing every class equally often (with replacement, ``len(entries)`` per epoch), or None.

    Args:
        entries: encoded training entries.
        num_classes: number of classes.
        class_balance: the bundle's option; a sampler only for ``"sampler"``.
        seed: seed of the sampler's generator.
    """
    if _check_balance(class_balance) != "sampler":
        return None
    counts = _class_counts(entries, num_classes)
    weights = [1.0 / counts[int(e["label"])] for e in entries]
    generator = torch.Generator().manual_seed(int(seed))
    return torch.utils.data.WeightedRandomSampler(weights, num_samples=len(entries), replacement=True, generator=generator)


# ---------------------------------------------------------------------------------------- checkpoints


class ClassNames:
    """The class names as a checkpoint entry: ``CheckpointSaver(save_dict={"model": net, "class_names": ClassNames(names)})``.

    ``state_dict()`` is the plain list of strings, so the file still loads with ``weights_only=True``.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = [str(n) for n in names]

    def state_dict(self) -> list[str]:
        return list(self.names)

    def load_state_dict(self, state: Sequence[str]) -> None:
        self.names = [str(n) for n in state]

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"ClassNames({self.names})"


def read_class_names(checkpoint: str | os.PathLike) -> list[str]:
    """The ``class_names`` entry of a checkpoint written by the classification bundle.

    Raises:
        FileNotFoundError: no such file (train first, or pass ``--ckpt_dir``/``--checkpoint``).
        ValueError: the file has no ``class_names`` list.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train first or point --ckpt_dir / --checkpoint at one")
    state = torch.load(path, map_location="cpu", weights_only=True)
    names = state.get("class_names") if isinstance(state, Mapping) else None
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path} has no 'class_names' list of strings; was it written by the openus_cls bundle?")
    return list(names)


# --------------------------------------------------------------------------------------------- data


def inference_datalist(dataset_dir: str | os.PathLike, split: str = "test") -> list[dict]:
    """Images to classify: a split of a data set folder, or every image of a plain folder.

    Args:
        dataset_dir: a data set (``datalist.json``, ``labels.csv`` or class folders) or a folder of images.
        split: ``"test"``, ``"validation"``, ``"training"`` or ``"all"`` for a data set; a plain image folder
            is always read whole.

    Returns:
        ``[{"image": path}]`` in the data set's order.

    Raises:
        ValueError: unknown split, or the split is empty.
        FileNotFoundError: no such folder, no images.
    """
    splits = ("training", "validation", "test")
    if split not in (*splits, "all"):
        raise ValueError(f"split must be one of {(*splits, 'all')}, got {split!r}")
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset_dir {root} does not exist or is not a folder")
    if (root / "datalist.json").is_file() or (root / "labels.csv").is_file() or scan_class_folders(root):
        lists = build_datalist(root, "classification", val_fraction=0.0)
        entries = [e for s in splits for e in lists[s]] if split == "all" else lists[split]
        if not entries:
            raise ValueError(f"{root} has no '{split}' images; pass --split all (or another split)")
    else:
        entries = scan_image_folder(root)
        if not entries:
            raise FileNotFoundError(f"no images in {root}")
    return [{"image": e["image"]} for e in entries]


# ------------------------------------------------------------------------------------------- metrics


def _nanmean(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else float("nan")


def classification_metrics(cm: torch.Tensor) -> dict[str, float]:
    """Accuracy, macro-F1 and balanced accuracy from per-class ``[C, 4]`` counts ``(tp, fp, tn, fn)``.

    As scikit-learn: macro-F1 averages F1 over the classes that occur in the labels or predictions;
    balanced accuracy averages recall over the classes that occur in the labels.
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


def pick_metrics(metrics: Mapping[str, Any], keep: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> dict:
    """Select metric handlers by name, e.g. the key metric (``keep=[name]``) and the others (``exclude=[name]``).

    Raises:
        ValueError: a name in ``keep`` or ``exclude`` is not in ``metrics`` (lists the available names).
    """
    for name in [*(keep or ()), *exclude]:
        if name not in metrics:
            raise ValueError(f"metric {name!r} is not one of {sorted(metrics)} (check key_metric)")
    names = list(keep) if keep is not None else [k for k in metrics if k not in exclude]
    return {k: metrics[k] for k in names}


def confusion_matrix(labels: Sequence[int], preds: Sequence[int], num_classes: int) -> np.ndarray:
    """``[K, K]`` counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    return cm


def _finite_or_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# ------------------------------------------------------------------------------------------- handler


def _source(item: Mapping[str, Any], batch_item: Mapping[str, Any] | None, key: str) -> str:
    for source in (item, batch_item or {}):
        value = source.get(key) if isinstance(source, Mapping) else None
        meta = getattr(value, "meta", None) or {}
        name = meta.get("filename_or_obj")
        if name:
            return str(name)
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
