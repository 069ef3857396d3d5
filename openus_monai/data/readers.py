"""Readers of user data sets: ``labels.csv``, MONAI ``datalist.json``, class folders, image folders.

Every reader returns *records*: dicts with absolute ``image`` paths and, where the source has them,
``mask`` (absolute path), ``label`` (class name) and ``split`` (``"training"``, ``"validation"`` or
``"test"``; None when the source does not say). Listed files are checked up front, and every error
names the file (and row or entry) at fault.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLIT_ALIASES",
    "is_image_file",
    "read_datalist_json",
    "read_labels_csv",
    "scan_class_folders",
    "scan_image_folder",
]

#: file name endings recognised as images when scanning folders (case-insensitive)
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".dcm")
#: accepted spellings of split names, mapped to the MONAI datalist keys
SPLIT_ALIASES: dict[str, str] = {
    "train": "training",
    "training": "training",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
    "testing": "test",
}
_DATALIST_KEYS = ("training", "validation", "test")
# folders and files that hold masks, not images, in common layouts (e.g. BUSI's "benign (1)_mask.png")
_MASK_DIRS = {"masks", "mask", "labels", "labelsTr", "labelsTs"}


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether the file name ends with one of :data:`IMAGE_EXTENSIONS` and is not a ``*_mask*`` file."""
    name = Path(path).name.lower()
    return name.endswith(IMAGE_EXTENSIONS) and "_mask" not in name and not name.startswith(".")


def _resolve(base: Path, value: str | os.PathLike) -> str:
    return os.path.normpath(os.path.join(base, os.fspath(value)))


def read_labels_csv(
    csv_path: str | os.PathLike,
    *,
    base_dir: str | os.PathLike | None = None,
    required: Sequence[str] = ("image",),
    check_exists: Sequence[str] = ("image",),
) -> list[dict]:
    """Read a ``labels.csv`` (columns ``image``, optional ``mask``, ``label``, ``split``; others ignored).

    Args:
        csv_path: the CSV file; ``image`` and ``mask`` paths are relative to ``base_dir`` or absolute.
        base_dir: folder the paths are relative to; defaults to the CSV's folder.
        required: columns that must exist and be non-empty in every row (e.g. ``("image", "mask")``);
            ``image`` is always required.
        check_exists: path columns (``image``, ``mask``) whose files must exist.

    Returns:
        records ``{"image", "mask", "label", "split"}`` in file order (``mask``/``label``/``split``
        are None when the column is absent or the cell empty; an empty ``split`` means training).

    Raises:
        FileNotFoundError: the CSV, or a file it lists, does not exist (names the line and path).
        ValueError: a required column or value is missing, or a split value is unknown.
    """
    csv_path = Path(csv_path)
    base = Path(base_dir) if base_dir is not None else csv_path.parent
    required = ("image", *(c for c in required if c != "image"))  # a row without an image is meaningless
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} does not exist.")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = columns
        for col in required:
            if col not in columns:
                raise ValueError(f"{csv_path}: no '{col}' column (columns: {columns}); it is needed here.")
        records = []
        for row in reader:
            line = reader.line_num
            values = {k: (row.get(k) or "").strip() for k in ("image", "mask", "label", "split")}
            for col in required:
                if not values[col]:
                    raise ValueError(f"{csv_path}, line {line}: empty '{col}' value.")
            split = None
            if values["split"]:
                split = SPLIT_ALIASES.get(values["split"].lower())
                if split is None:
                    raise ValueError(
                        f"{csv_path}, line {line}: unknown split '{values['split']}' "
                        f"(expected one of {sorted(SPLIT_ALIASES)})."
                    )
            record = {
                "image": _resolve(base, values["image"]),
                "mask": _resolve(base, values["mask"]) if values["mask"] else None,
                "label": values["label"] or None,
                "split": split,
            }
            for key in check_exists:
                if record.get(key) and not os.path.exists(record[key]):
                    raise FileNotFoundError(
                        f"{csv_path}, line {line}: {key} '{values[key]}' does not exist ({record[key]})."
                    )
            records.append(record)
    return records


def read_datalist_json(
    json_path: str | os.PathLike,
    *,
    base_dir: str | os.PathLike | None = None,
    path_keys: Sequence[str] = ("image", "label"),
    required: Sequence[str] = ("image",),
    check_exists: Sequence[str] | None = None,
) -> dict[str, list[dict]]:
    """Read a MONAI (Decathlon-style) datalist: ``training``, optional ``validation`` and ``test``.

    Entries are ``{"image": ..., "label": ...}`` dicts; a ``test`` list of plain path strings is
    accepted too. Paths are relative to ``base_dir`` or absolute. Unlike MONAI's
    ``load_decathlon_datalist``, only ``path_keys`` are resolved, so a class name in ``label`` is
    never turned into a path when a same-named folder exists.

    Args:
        json_path: the JSON file.
        base_dir: folder the paths are relative to; defaults to the JSON's folder.
        path_keys: entry keys holding paths (a path or a list of paths) to make absolute.
        required: keys every training and validation entry must have (e.g. ``("image", "label")``);
            test entries need only ``image`` (Decathlon test lists are unlabeled).
        check_exists: path keys whose files must exist; defaults to ``path_keys``.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}`` (missing lists are empty).

    Raises:
        FileNotFoundError: the JSON, or a file it lists, does not exist (names the entry and path).
        ValueError: invalid JSON, no ``training`` list, or an entry that is not a dict or lacks a key.
    """
    json_path = Path(json_path)
    base = Path(base_dir) if base_dir is not None else json_path.parent
    check_exists = tuple(path_keys) if check_exists is None else tuple(check_exists)
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path} does not exist.")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{json_path} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("training"), list):
        raise ValueError(f"{json_path}: expected a JSON object with a 'training' list (MONAI datalist format).")
    out: dict[str, list[dict]] = {}
    for split in _DATALIST_KEYS:
        items = data.get(split) or []
        if not isinstance(items, list):
            raise ValueError(f"{json_path}: '{split}' must be a list.")
        entries = []
        for i, item in enumerate(items):
            where = f"{json_path}, '{split}'[{i}]"
            if isinstance(item, str) and split == "test":  # Decathlon test lists hold bare paths
                item = {"image": item}
            if not isinstance(item, dict):
                raise ValueError(f"{where}: expected a dict like {{'image': ...}}, got {type(item).__name__}.")
            for key in required if split != "test" else ("image",):
                if item.get(key) in (None, ""):
                    raise ValueError(f"{where}: missing '{key}'.")
            entry = dict(item)
            for key in path_keys:
                value = entry.get(key)
                if isinstance(value, (str, os.PathLike)):
                    entry[key] = _resolve(base, value)
                elif isinstance(value, list) and all(isinstance(v, (str, os.PathLike)) for v in value):
                    entry[key] = [_resolve(base, v) for v in value]  # multi-channel: a list of files
            for key in check_exists:
                raw, value = item.get(key), entry.get(key)
                pairs = zip(raw, value) if isinstance(value, list) else [(raw, value)]
                for raw_path, path in pairs:
                    if isinstance(path, str) and not os.path.exists(path):
                        raise FileNotFoundError(f"{where}: {key} '{raw_path}' does not exist ({path}).")
            entries.append(entry)
        out[split] = entries
    return out


def scan_class_folders(root: str | os.PathLike) -> list[dict]:
    """Images in class-named sub-folders: ``root/CLASS/**/IMAGE`` or ``root/SPLIT/CLASS/**/IMAGE``.

    ``SPLIT`` is a folder named like a split (``train``, ``val``, ``test``, see
    :data:`SPLIT_ALIASES`); when ``root`` has such folders only they are read. Mask folders (``masks``,
    ``labels``), hidden folders and ``*_mask*`` files are skipped.

    Args:
        root: data set folder.

    Returns:
        records ``{"image", "label", "split"}`` sorted by path; empty when there are no class folders.
    """
    root = Path(root)

    def subdirs(folder: Path) -> list[Path]:
        return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in _MASK_DIRS)

    split_dirs = [d for d in subdirs(root) if d.name.lower() in SPLIT_ALIASES]
    parents = [(d, SPLIT_ALIASES[d.name.lower()]) for d in split_dirs] if split_dirs else [(root, None)]
    records = []
    for parent, split in parents:
        for class_dir in subdirs(parent):
            for image in scan_image_folder(class_dir):
                records.append({"image": image["image"], "label": class_dir.name, "split": split})
    return records


def scan_image_folder(root: str | os.PathLike) -> list[dict]:
    """All images below ``root`` (recursive), e.g. for pretraining on an unlabeled folder.

    Files are recognised by :data:`IMAGE_EXTENSIONS`; mask folders (``masks``, ``labels``), hidden
    folders and ``*_mask*`` files are skipped.

    Args:
        root: folder to scan.

    Returns:
        records ``{"image"}`` (absolute paths), sorted.
    """
    found = []
    for folder, dirs, files in os.walk(os.path.abspath(root)):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _MASK_DIRS)
        found.extend(os.path.join(folder, f) for f in files if is_image_file(f))
    return [{"image": p} for p in sorted(found)]
