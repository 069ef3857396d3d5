"""Class labels of a classification data set: names <-> indices, class balancing, names kept in checkpoints.

- :func:`encode_labels`, :func:`labeled_split`: datalist entries with the class index as ``label``;
- :func:`class_weights`, :func:`balanced_sampler`: inverse-frequency loss weights or a class-balanced sampler
  (the classification bundle's ``class_balance`` option, :data:`BALANCE_MODES`);
- :class:`ClassNames`, :func:`read_class_names`: the class names as a checkpoint entry, so that predictions
  come back as names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "BALANCE_MODES",
    "ClassNames",
    "balanced_sampler",
    "class_weights",
    "encode_labels",
    "labeled_split",
    "read_class_names",
]

logger = logging.getLogger(__name__)

#: ``class_balance`` options: nothing, inverse-frequency loss weights, or a class-balanced sampler
BALANCE_MODES: tuple[str, ...] = ("none", "loss", "sampler")


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


def read_class_names(checkpoint: str | os.PathLike, default: Sequence[str] | None = None) -> list[str]:
    """The ``class_names`` entry of a checkpoint written by the classification bundle.

    Args:
        checkpoint: the checkpoint file.
        default: names to return when the file is missing or holds no names (e.g. a plain state dict, as the
            model zoo writes its test weights); None: raise instead.

    Raises:
        FileNotFoundError: no such file (train first, or pass ``--ckpt_dir``/``--checkpoint``), and no ``default``.
        ValueError: the file has no ``class_names`` list, and no ``default``.
    """
    path = Path(checkpoint)
    if not path.is_file():
        if default is not None:
            return [str(n) for n in default]
        raise FileNotFoundError(f"checkpoint {path} does not exist; train first or point --ckpt_dir / --checkpoint at one")
    state = torch.load(path, map_location="cpu", weights_only=True)
    names = state.get("class_names") if isinstance(state, Mapping) else None
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        if default is not None:
            return [str(n) for n in default]
        raise ValueError(f"{path} has no 'class_names' list of strings; was it written by the openus_cls bundle?")
    return list(names)

