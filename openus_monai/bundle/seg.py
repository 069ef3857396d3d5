"""Small helpers that ``bundles/openus_seg`` configs call: datalists for evaluation and inference."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from openus_monai.data import DatasetNotFoundError, ensure_demo_data, is_demo_request, is_image_file, read_datalist_json, read_records, scan_image_folder

__all__ = ["first_n", "inference_datalist", "labeled"]

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
    """The first ``n`` entries (all when ``n`` is None or 0): a quick way to shorten a run."""
    entries = list(entries)
    if n and int(n) < len(entries):
        logger.info("keeping the first %d of %d training images (max_train_images=%d)", int(n), len(entries), int(n))
        return entries[: int(n)]
    return entries


def inference_datalist(
    dataset_dir: str | os.PathLike | Sequence[str] | None = "", split: str = "test", check_exists: bool = True
) -> list[dict]:
    """Entries ``{"image": path}`` to segment.

    - ``""``, None or ``"demo"``: the demo data set's ``split`` images (generated in the cache if needed);
    - a folder holding ``datalist.json`` or ``labels.csv``: its ``split`` images (``"all"``: every listed image);
    - a ``.json`` file: a MONAI datalist, its ``split`` list (``"all"``: every list);
    - any other folder: every image below it (recursive; mask folders and ``*_mask*`` files skipped);
    - an image file, or a list of image files: those.

    Args:
        dataset_dir: see above.
        split: ``"training"``, ``"validation"``, ``"test"`` (default) or ``"all"``.
        check_exists: raise for listed images that do not exist (a list, a ``.json``); False leaves them
            to :func:`~openus_monai.data.validate_datalist`, which reports every invalid file at once (or
            skips them).

    Raises:
        FileNotFoundError: the path does not exist, or holds no image (or a listed image does not exist).
        ValueError: unknown split, or the split is empty.
    """
    splits = ("training", "validation", "test")
    if split not in (*splits, "all"):
        raise ValueError(f"split must be one of {splits} or 'all', got {split!r}")
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
            entries = [e for s in splits for e in lists[s]] if split == "all" else lists[split]
            return _images_of(entries, f"{path} '{split}'")
        if is_image_file(path):
            return [{"image": str(path.absolute())}]
        raise ValueError(f"{path} is neither an image nor a MONAI datalist (.json)")
    if not path.is_dir():
        raise DatasetNotFoundError(f"dataset_dir {path.absolute()} does not exist (leave it empty, or 'demo', for the demo data)")
    if (path / "datalist.json").is_file() or (path / "labels.csv").is_file():
        records = read_records(path, "pretraining")  # images only: masks are not needed (nor read) here
        entries = [r for r in records if split == "all" or (r["split"] or "training") == split]
        return _images_of(entries, f"{path} '{split}'")
    entries = scan_image_folder(path)
    if not entries:
        raise DatasetNotFoundError(f"dataset_dir {path.absolute()} holds no image files to segment (looked for datalist.json, labels.csv or images below it)")
    return entries


def _images_of(entries: Sequence[dict], where: str) -> list[dict]:
    if not entries:
        raise ValueError(f"{where}: no entries (choose another split, or 'all')")
    return [{"image": e["image"]} for e in entries]
