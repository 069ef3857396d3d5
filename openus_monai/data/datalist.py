"""``build_datalist``: the one place every bundle reads user data through."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .readers import IMAGE_EXTENSIONS, read_datalist_json, read_labels_csv, scan_class_folders, scan_image_folder
from .splits import split_validation, subset_by_label_ratio

__all__ = ["TASKS", "build_datalist", "read_records", "records_to_entries"]

TASKS: tuple[str, ...] = ("pretraining", "segmentation", "classification")
_SPLITS = ("training", "validation", "test")
logger = logging.getLogger(__name__)


def read_records(dataset_dir: str | os.PathLike, task: str, check_exists: bool = True) -> list[dict]:
    """Read a data set folder into records ``{"image", "mask", "label", "split"}`` (absolute paths).

    Sources, first match wins:

    1. ``datalist.json`` (MONAI datalist; for segmentation ``label`` is the mask path, for
       classification the class name), or ``dataset_dir`` itself when it is a ``.json`` datalist file;
    2. ``labels.csv`` (columns ``image``, optional ``mask``, ``label``, ``split``);
    3. classification: class-named sub-folders of images; pretraining: every image below the folder.

    Args:
        dataset_dir: the data set folder, or a MONAI datalist ``.json`` file.
        task: one of :data:`TASKS`.
        check_exists: refuse a listed file that does not exist; False leaves that to a later check
            (:func:`~openus_monai.data.validate_datalist`, which can skip and report it).

    Returns:
        records in source order; ``split`` is None where the source gives none.

    Raises:
        FileNotFoundError: the folder, or a listed file (with ``check_exists``), does not exist; or no
            source was found.
        ValueError: a source lacks what the task needs (mask column, class labels, ...).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
    root = Path(dataset_dir).expanduser()
    if root.is_file() and root.suffix.lower() == ".json":  # a MONAI datalist file itself (e.g. corpus's datalist.json)
        root, json_path = root.parent, root
    elif not root.is_dir():
        raise FileNotFoundError(f"dataset_dir {root} does not exist or is not a folder.")
    else:
        json_path = root / "datalist.json"
    csv_path = root / "labels.csv"
    if json_path.is_file():
        logger.info("reading %s for %s", json_path, task)
        prepared = _prepared_records(json_path, task)
        if prepared is not None:
            return prepared
        path_keys = ("image", "label") if task == "segmentation" else ("image",)
        required = ("image",) if task == "pretraining" else ("image", "label")
        lists = read_datalist_json(json_path, path_keys=path_keys, required=required, check_exists=None if check_exists else ())
        mask_key, label_key = ("label", None) if task == "segmentation" else (None, "label")
        return [
            {
                "image": e["image"],
                "mask": e.get(mask_key) if mask_key else None,
                "label": e.get(label_key) if label_key else None,
                "split": split,
            }
            for split in _SPLITS
            for e in lists[split]
        ]
    if csv_path.is_file():
        logger.info("reading %s for %s", csv_path, task)
        required = {"pretraining": ("image",), "segmentation": ("image", "mask"), "classification": ("image", "label")}
        check = ("image", "mask") if task == "segmentation" else ("image",)
        return read_labels_csv(csv_path, required=required[task], check_exists=check if check_exists else ())
    looked_for = [f"{json_path} (MONAI datalist)", f"{csv_path} (columns image[,mask][,label][,split])"]
    records: list[dict] = []
    if task == "classification":
        records = scan_class_folders(root)
        looked_for.append(f"class-named sub-folders of images in {root} (e.g. benign/*.png, malignant/*.png)")
    elif task == "pretraining":
        records = [{**r, "mask": None, "label": None, "split": None} for r in scan_image_folder(root)]
        looked_for.append(f"image files below {root} ({', '.join(IMAGE_EXTENSIONS)})")
    if not records:
        raise FileNotFoundError(
            f"no usable {task} data in {root}: looked for " + "; ".join(looked_for) + ". "
            "Leave dataset_dir empty (or set it to 'demo') to use the generated demo data instead."
        )
    logger.info("scanned %d images in %s for %s", len(records), root, task)
    return records


def _refuse_sequence_frames(json_path: Path, data: dict) -> None:
    """Stop on a prepared datalist that lists frames of videos, cines or volumes (``prepare`` without ``--cache``).

    The bundles read image files; frame ``k`` of ``clip.mp4`` would be read as the whole file (or refused as not an
    image). ``prepare --cache`` writes every frame as a PNG, which the bundles read.

    Raises:
        ValueError: naming the datalist, the number of frame entries, one example and the command that fixes it.
    """
    frames = {(e["image"], e["frame"]): None for lst in ("pretraining", *_SPLITS) for e in data.get(lst) or []
              if isinstance(e, dict) and e.get("frame") is not None}
    if not frames:
        return
    root = data.get("root") or "ROOT"
    image, frame = next(iter(frames))
    raise ValueError(
        f"{json_path} lists {len(frames)} frames of video, cine or volume files (e.g. frame {frame} of {image}); the "
        f"bundles read image files only. Prepare the data set with --cache, which writes "
        f"every frame as a PNG: python -m openus_monai prepare --root {root} --out {json_path.parent} --cache"
    )


def _prepared_records(json_path: Path, task: str) -> list[dict] | None:
    """Records of a datalist written by ``prepare`` / ``corpus`` (it has a ``pretraining`` list), else None.

    Pretraining reads the ``pretraining`` list; segmentation the entries with a ``mask``; classification
    the entries with a class ``label`` (entries lacking it, e.g. a mask-only image, are left out).
    """
    data = json.loads(json_path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("pretraining"), list):
        return None
    _refuse_sequence_frames(json_path, data)
    base = json_path.parent

    def path(p: str) -> str:
        return os.path.normpath(os.path.join(base, p))

    if task == "pretraining":
        return [{"image": path(e["image"]), "mask": None, "label": None, "split": None} for e in data["pretraining"]]
    key = "mask" if task == "segmentation" else "label"
    return [
        {"image": path(e["image"]), "mask": path(e["mask"]) if e.get("mask") else None, "label": e.get("label"), "split": split}
        for split in _SPLITS
        for e in data.get(split) or []
        if e.get(key) is not None
    ]


def records_to_entries(records: list[dict], task: str) -> list[dict]:
    """Task-specific datalist entries: ``{"image"}``, ``{"image", "label": mask}`` or ``{"image", "label": class}``.

    Args:
        records: records from :func:`read_records`.
        task: one of :data:`TASKS`.

    Returns:
        one entry per record; a record without mask / class (an unlabeled test entry of a
        ``datalist.json``) gives ``{"image"}``.
    """
    if task == "pretraining":
        return [{"image": r["image"]} for r in records]
    key = "mask" if task == "segmentation" else "label"
    # unlabeled test entries (allowed in datalist.json) keep only the image
    return [{"image": r["image"], "label": r[key]} if r[key] is not None else {"image": r["image"]} for r in records]


def build_datalist(
    dataset_dir: str | os.PathLike,
    task: str,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    label_ratio: float = 1.0,
    merge_splits: bool | None = None,
    check_exists: bool = True,
) -> dict:
    """Build training / validation / test datalists (absolute paths) from a user data set folder.

    Reads ``datalist.json``, else ``labels.csv``, else folders (see :func:`read_records`); every
    listed image (and mask, for segmentation) is checked to exist up front. Then:

    - pretraining merges all splits into ``training`` (unless ``merge_splits=False``);
    - without validation entries, a seeded ``val_fraction`` of training is held out, stratified by
      class when the source has class labels (``label`` column or class folders);
    - ``label_ratio < 1`` keeps a seeded, class-stratified, nested subset of the *training* entries
      (:func:`~openus_monai.data.splits.subset_by_label_ratio`); validation and test are never
      subsampled.

    To use generated demo data when no data set is given, pass the folder through
    :func:`~openus_monai.data.demo.ensure_demo_data` first; this function never generates data.

    Args:
        dataset_dir: the data set folder.
        task: ``"pretraining"``, ``"segmentation"`` or ``"classification"``.
        val_fraction: fraction of training held out when the source has no validation split, in [0, 1).
        seed: seed of the validation hold-out and of the label subset.
        label_ratio: fraction of labeled training entries to keep, in (0, 1].
        merge_splits: pretraining only: put every image in ``training`` (default True for pretraining).
        check_exists: refuse listed files that do not exist (default); the bundles pass False and let
            :func:`~openus_monai.data.validate_datalist` stop on them or, with ``skip_invalid``, skip them.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}`` with entries ``{"image"}``
        (pretraining), ``{"image", "label": mask path}`` (segmentation) or ``{"image", "label": class
        name}`` (classification); for classification also ``"classes"``, the sorted class names.

    Raises:
        ValueError: bad task, ``val_fraction`` or ``label_ratio``, empty ``dataset_dir``, or a source
            lacking what the task needs.
        FileNotFoundError: missing folder or listed file, or no recognised source (the message
            says what was looked for).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
    if not 0.0 < label_ratio <= 1.0:
        raise ValueError(f"label_ratio must be in (0, 1], got {label_ratio}.")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    if dataset_dir is None or str(dataset_dir).strip() == "":
        raise ValueError(
            "dataset_dir is empty; give a data set folder, or generate demo data with "
            "openus_monai.data.ensure_demo_data() and pass the folder it returns."
        )
    records = read_records(dataset_dir, task, check_exists=check_exists)
    if merge_splits is None:
        merge_splits = task == "pretraining"
    if merge_splits:
        records = [{**r, "split": "training"} for r in records]
    lists = {s: [r for r in records if (r["split"] or "training") == s] for s in _SPLITS}
    # stratify by class when every training record has one (classification always does)
    key = "label" if lists["training"] and all(r["label"] is not None for r in lists["training"]) else None
    if not lists["validation"] and not merge_splits:
        lists["training"], lists["validation"] = split_validation(lists["training"], val_fraction, seed, key)
    lists["training"] = subset_by_label_ratio(lists["training"], label_ratio, seed, key)
    result: dict = {s: records_to_entries(lists[s], task) for s in _SPLITS}
    if task == "classification":
        names = {r["label"] for r in records if r["label"] is not None}
        try:
            result["classes"] = sorted(names)
        except TypeError:  # mixed types (e.g. ints and strings from a hand-written datalist.json)
            result["classes"] = sorted(names, key=str)
    return result
