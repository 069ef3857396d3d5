"""Class labels in MONAI Label's datastore: one JSON label file per study, ``{"label": "<class name>"}``.

MONAI Label keeps one final label per study (``labels/final/<study>.<ext>``), saved with
``PUT /datastore/label?image=<study>`` (the file as the form field ``label``); its trainers read the file
``datastore.datalist()`` points to: a label image, or a JSON file for the boxes of detection bundles
(``BundleTrainTask._fetch_datalist``). A class label is such a JSON file, holding the class name::

    curl -f -X PUT "http://127.0.0.1:8000/datastore/label?image=STUDY&tag=final" -F "label=@label.json"
    # label.json: {"label": "malignant"}

so a study's final label is either a mask (segmentation) or a class (classification), never both.
"""

from __future__ import annotations

import json
import os

#: the extension that marks a final label as a class label (masks are images)
CLASS_LABEL_EXT = ".json"


def is_class_label(path: str) -> bool:
    """Whether a datastore label file is a class label (a ``.json`` file), not a label image."""
    return str(path).lower().endswith(CLASS_LABEL_EXT)


def study_id(label_path: str) -> str:
    """The study a final label belongs to: its file name without the extension (MONAI Label's label id)."""
    name = os.path.basename(label_path)
    return name[: -len(CLASS_LABEL_EXT)] if is_class_label(name) else os.path.splitext(name)[0]


def read_class_label(path: str) -> str:
    """The class name in a class label file.

    Raises:
        ValueError: the file is not JSON, or has no string ``label`` (names the study and the file).
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"study {study_id(path)!r}: cannot read its class label {path} ({e})") from e
    name = data.get("label") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        raise ValueError(
            f'study {study_id(path)!r}: its class label {path} must be {{"label": "<class name>"}}, got {data!r}'
        )
    return name
