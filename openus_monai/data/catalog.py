"""The dataset catalog: public ultrasound datasets, what was published about them, and their download layout.

The data is ``openus_monai/data/catalog/datasets.json`` (package data). Each entry has ``name``,
``aliases``, ``organ``, ``images`` (count as published, or ``"unknown"``), ``task``, ``labels``,
``source``, ``licence``, ``listed_in`` and ``layout``; :mod:`openus_monai.data.prepare` reads the layout
(mask / label / group / split rules) of the entry that matches a download.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources

__all__ = ["CATALOG_COLUMNS", "catalog_table", "find_dataset", "load_catalog"]

#: the columns of the printed table
CATALOG_COLUMNS: tuple[str, ...] = ("name", "organ", "images", "task", "licence", "listed_in")


@lru_cache(maxsize=1)
def _load() -> dict:
    text = resources.files("openus_monai.data").joinpath("catalog/datasets.json").read_text(encoding="utf-8")
    return json.loads(text)


def load_catalog() -> list[dict]:
    """All catalog entries (copies; editing them does not change the catalog)."""
    return json.loads(json.dumps(_load()["datasets"]))


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def find_dataset(name_or_root: str | os.PathLike) -> dict | None:
    """The entry whose name or alias equals ``name_or_root`` (or, for a path, its folder name).

    Matching ignores case and punctuation (``hip-dicom`` = ``HIP_DICOM``). Returns None when no entry matches.
    """
    key = _norm(os.path.basename(os.path.normpath(os.fspath(name_or_root))))
    for entry in load_catalog():
        if key in {_norm(n) for n in (entry["name"], *entry.get("aliases", ()))}:
            return entry
    return None


def catalog_table(entries: list[dict] | None = None, width: int = 40) -> str:
    """The catalog as a fixed-width text table (one row per dataset, :data:`CATALOG_COLUMNS`)."""
    entries = load_catalog() if entries is None else entries

    def cell(entry: dict, col: str) -> str:
        value = entry.get(col, "")
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        return text if len(text) <= width else text[: width - 1] + "~"

    rows = [list(CATALOG_COLUMNS)] + [[cell(e, c) for c in CATALOG_COLUMNS] for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(CATALOG_COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
