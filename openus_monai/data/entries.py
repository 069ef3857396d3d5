"""The entry lists a run uses, beyond :func:`~openus_monai.data.build_datalist`: images to infer on
(:func:`inference_datalist`, both downstream bundles), every valid image to pretrain on
(:func:`pretraining_datalist`), the labeled entries of a split (:func:`labeled`), a shortened list
(:func:`first_n`) and the class-labelled images that monitor pretraining (:func:`monitor_datalist`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from .datalist import _SPLITS as SPLITS
from .datalist import build_datalist, read_records
from .demo import DatasetNotFoundError, ensure_demo_data, is_demo_request
from .labels import encode_labels
from .readers import is_image_file, read_datalist_json, scan_class_folders, scan_image_folder
from .splits import subset_by_label_ratio
from .validation import InvalidFiles, validate_datalist

__all__ = ["first_n", "inference_datalist", "labeled", "monitor_datalist", "pretraining_datalist"]

logger = logging.getLogger(__name__)


def labeled(entries: Sequence[dict], split: str = "test", key: str = "label") -> list[dict]:
    """The entries that have ``key`` (a mask); evaluation needs them.

    Raises:
        ValueError: none has one (e.g. a ``datalist.json`` whose test list is unlabeled).
    """
    kept = [e for e in entries if e.get(key)]
    if not kept:
        raise ValueError(
            f"no labeled entries in the '{split}' split ({len(entries)} entries, none with a '{key}'); "
            f"evaluation needs masks: pass --test_split validation, or a data set whose {split} entries have masks"
        )
    return kept


def first_n(entries: Sequence[dict], n: int | None = None) -> list[dict]:
    """The first ``n`` entries (all when ``n`` is None or 0): a quick way to shorten a run (logged)."""
    entries = list(entries)
    if n and int(n) < len(entries):
        logger.info("keeping the first %d of %d training images (max_train_images=%d)", int(n), len(entries), int(n))
        return entries[: int(n)]
    return entries


def inference_datalist(
    dataset_dir: str | os.PathLike | Sequence[str] | None = "",
    split: str = "test",
    check_exists: bool = True,
    task: str = "segmentation",
) -> list[dict]:
    """Entries ``{"image": path}`` to run a model on (the inference configs of both downstream bundles).

    - ``""``, None or ``"demo"``: the demo data set's ``split`` images (generated in the cache if needed);
    - a folder holding ``datalist.json`` or ``labels.csv``: its ``split`` images (``"all"``: every listed
      image); labels and masks are neither needed nor read; entries without a split count as training;
    - for ``task="classification"``, a folder of class-named sub-folders (``CLASS/`` or ``SPLIT/CLASS/``,
      :func:`~openus_monai.data.scan_class_folders`): its ``split`` images likewise;
    - a ``.json`` file: a MONAI datalist, its ``split`` list (``"all"``: every list);
    - any other folder: every image below it (recursive; mask folders and ``*_mask*`` files skipped);
    - an image file, or a list of image files: those.

    Args:
        dataset_dir: see above.
        split: ``"training"``, ``"validation"``, ``"test"`` (default) or ``"all"``.
        check_exists: raise for listed images that do not exist (a list, a ``.json``); False leaves them
            to :func:`~openus_monai.data.validate_datalist`, which reports every invalid file at once (or
            skips them).
        task: ``"segmentation"`` or ``"classification"``; only classification reads class folders as a
            data set.

    Returns:
        ``[{"image": path}]`` (absolute paths) in the data set's order.

    Raises:
        FileNotFoundError: the path does not exist, or holds no image (or a listed image does not exist).
        ValueError: unknown split or task, or the split is empty.
    """
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split must be one of {SPLITS} or 'all', got {split!r}")
    if task not in ("segmentation", "classification"):
        raise ValueError(f"task must be 'segmentation' or 'classification', got {task!r}")
    if isinstance(dataset_dir, (list, tuple)):
        missing = [p for p in dataset_dir if not os.path.isfile(p)] if check_exists else []
        if missing:
            raise FileNotFoundError(f"image files not found: {missing[:5]}")
        return [{"image": os.path.abspath(p)} for p in dataset_dir]
    if is_demo_request(dataset_dir):  # type: ignore[arg-type]
        dataset_dir = ensure_demo_data(None)
    path = Path(dataset_dir).expanduser()
    if path.is_file():
        if path.suffix.lower() == ".json":
            lists = read_datalist_json(path, path_keys=("image",), required=("image",), check_exists=None if check_exists else ())
            entries = [e for s in SPLITS for e in lists[s]] if split == "all" else lists[split]
            return _images_of(entries, f"{path} '{split}'")
        if is_image_file(path):
            return [{"image": str(path.absolute())}]
        raise ValueError(f"{path} is neither an image nor a MONAI datalist (.json)")
    if not path.is_dir():
        raise DatasetNotFoundError(f"dataset_dir {path.absolute()} does not exist (leave it empty, or 'demo', for the demo data)")
    if (path / "datalist.json").is_file() or (path / "labels.csv").is_file():
        records = read_records(path, "pretraining", check_exists=check_exists)  # images only: no labels needed
    elif task == "classification":
        records = scan_class_folders(path)
    else:
        records = []
    if records:
        entries = [r for r in records if split == "all" or (r["split"] or "training") == split]
        return _images_of(entries, f"{path} '{split}'")
    entries = scan_image_folder(path)
    if not entries:
        raise DatasetNotFoundError(
            f"dataset_dir {path.absolute()} holds no image files (looked for datalist.json, labels.csv or images below it)"
        )
    return entries


def _images_of(entries: Sequence[dict], where: str) -> list[dict]:
    if not entries:
        raise ValueError(f"{where}: no entries (choose another split, or 'all': --split all)")
    return [{"image": e["image"]} for e in entries]


def pretraining_datalist(
    dataset_dir: str | os.PathLike | None,
    demo_images: int = 48,
    seed: int = 0,
    invalid_files: InvalidFiles | None = None,
) -> list[dict]:
    """Every valid image of ``dataset_dir`` (``datalist.json``, ``labels.csv`` or a folder; all splits), each
    with its dataset ``index`` (the key of the masking handler's loss memory). An empty ``dataset_dir`` (or
    ``"demo"``) gets the generated demo data, in the cache; a named folder without a data set is an error
    (:func:`~openus_monai.data.ensure_demo_data`).

    Every file is checked from its header first (:func:`~openus_monai.data.validate_datalist`): by
    default one error lists all invalid files before training starts; with ``invalid_files.skip`` they are
    left out (and reported), and the indices count the valid images only.

    Args:
        dataset_dir: the data set folder; empty, None or ``"demo"`` for the demo data.
        demo_images: how many demo images to generate when needed.
        seed: seed of the demo data.
        invalid_files: what to do with invalid files (default: stop, listing them).

    Returns:
        ``[{"image": path, "index": i}]``.
    """
    root = ensure_demo_data(dataset_dir or None, n=demo_images, seed=seed)
    entries = build_datalist(root, "pretraining", seed=seed, check_exists=False)["training"]  # missing files: reported below
    entries = validate_datalist(entries, invalid_files, keys=("image",))
    return [dict(entry, index=i) for i, entry in enumerate(entries)]


def monitor_datalist(dataset_dir: str | os.PathLike | None, max_images: int | None = None, seed: int = 0) -> list[dict]:
    """Class-labelled images (all splits) for the k-NN monitor of pretraining, labels as class indices.

    Args:
        dataset_dir: a classification data set (``datalist.json``, ``labels.csv`` with a ``label`` column,
            or class folders; e.g. BUSI or a ``prepare`` output); empty or None: no monitoring (``[]``).
        max_images: keep a seeded, class-stratified subset of at most this many (None or 0: all).
        seed: seed of that subset.

    Returns:
        ``[{"image": path, "label": class index}]``.

    Raises:
        FileNotFoundError, ValueError: as :func:`~openus_monai.data.build_datalist` (no data set, no labels).
    """
    if not dataset_dir:
        return []
    datalist = build_datalist(dataset_dir, "classification", merge_splits=True, seed=seed)
    entries = encode_labels(datalist["training"], [str(c) for c in datalist["classes"]])
    if max_images and int(max_images) < len(entries):
        entries = subset_by_label_ratio(entries, int(max_images) / len(entries), seed, stratify_key="label")
    return [{"image": e["image"], "label": int(e["label"])} for e in entries]
