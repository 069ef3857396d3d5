"""The dataset catalog: public ultrasound datasets, what was published about them, and their download layout.

The data is ``openus_monai/data/catalog/datasets.json`` (package data). Each entry has ``name``,
``aliases``, ``organ``, ``images`` (the publisher's count, or ``"unknown"``), ``task``, ``labels``,
``source``, ``licence``, ``listed_in`` (the published lists that name it: ``openus``, ``openus-downstream``,
``usf-mae``, ``shared`` or ``not-listed``), ``listings`` (per list, its row as published, e.g. OpenUS's ``size``)
and ``layout``; the file's ``lists`` say where each list was read (URL, commit).
:mod:`openus_monai.data.prepare` reads the layout (mask / label / group / split rules) of the entry that matches a
download.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources

__all__ = ["CATALOG_COLUMNS", "catalog_lists", "catalog_table", "find_dataset", "list_counts", "load_catalog"]

#: the columns of the printed table (``openus_images``: the size in OpenUS's table, from ``listings``)
CATALOG_COLUMNS: tuple[str, ...] = ("name", "organ", "images", "openus_images", "task", "licence", "listed_in")


@lru_cache(maxsize=1)
def _load() -> dict:
    text = resources.files("openus_monai.data").joinpath("catalog/datasets.json").read_text(encoding="utf-8")
    return json.loads(text)


def load_catalog() -> list[dict]:
    """All catalog entries (copies; editing them does not change the catalog)."""
    return json.loads(json.dumps(_load()["datasets"]))


def catalog_lists() -> dict[str, dict]:
    """The published lists that ``listed_in`` refers to: ``{tag: {"title", "url", ...}}`` (copies)."""
    return json.loads(json.dumps(_load()["lists"]))


def list_counts(entries: list[dict] | None = None) -> dict[str, int]:
    """How many entries each ``listed_in`` tag has, in the order of :func:`catalog_lists` (then any other tag)."""
    entries = load_catalog() if entries is None else entries
    counts = dict.fromkeys(catalog_lists(), 0)
    for entry in entries:
        for tag in entry.get("listed_in", ()):
            counts[tag] = counts.get(tag, 0) + 1
    return counts


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
    """The catalog as a fixed-width text table (one row per dataset, :data:`CATALOG_COLUMNS`).

    Below the table, one line per published list: how many entries it names and, for OpenUS's table, the sum of
    its sizes; each list's source URL.
    """
    entries = load_catalog() if entries is None else entries

    def cell(entry: dict, col: str) -> str:
        if col == "openus_images":
            value = entry.get("listings", {}).get("openus", {}).get("size", "")
        else:
            value = entry.get(col, "")
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        return text if len(text) <= width else text[: width - 1] + "~"

    rows = [list(CATALOG_COLUMNS)] + [[cell(e, c) for c in CATALOG_COLUMNS] for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(CATALOG_COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + [""] + _summary(entries))


def _summary(entries: list[dict]) -> list[str]:
    """Lines: entries per ``listed_in`` tag (OpenUS with its size total) and where each list was read."""
    lists = catalog_lists()
    openus_total = sum(e.get("listings", {}).get("openus", {}).get("size", 0) for e in entries)
    lines = [f"{len(entries)} datasets; listed in:"]
    for tag, count in list_counts(entries).items():
        extra = f", {openus_total:,} images by its sizes" if tag == "openus" else ""
        where = lists.get(tag, {}).get("url", "")
        lines.append(f"  {tag:<18} {count:>3}{extra}" + (f"  ({where})" if where else ""))
    return lines
