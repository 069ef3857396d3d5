"""``corpus``: every dataset under a root prepared, deduplicated across sources, test sets held out, one list.

Steps: :func:`~openus_monai.data.prepare.prepare` each dataset folder (with the PNG cache, so training
reads one fast format), :func:`~openus_monai.data.dedup.dedup` all of them together with the named test
sets excluded, then keep one member of every duplicate group and write ``out/datalist.json`` (its
``pretraining`` list; the pretraining bundle reads it with ``dataset_dir=out``) and ``out/summary.csv``
(per source: organ, files, images, frames, kept, removed as test leaks, removed as duplicates).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..io import atomic_write_json
from ..options import as_names
from .dedup import DEFAULT_RADIUS, dedup, output_names
from .prepare import prepare

__all__ = ["build_corpus", "find_datasets"]


def find_datasets(root: str | os.PathLike) -> list[Path]:
    """Dataset folders under ``root``: its sub-folders, and those of a ``raw`` sub-folder (hidden ones skipped)."""
    root = Path(root)
    found = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if d.name == "raw":
            found.extend(sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")))
        else:
            found.append(d)
    return found


def build_corpus(
    root: str | os.PathLike,
    out: str | os.PathLike,
    exclude: str | Sequence[str] | None = None,
    frame_stride: int = 5,
    radius: int = DEFAULT_RADIUS,
    progress: bool = True,
) -> dict:
    """Build one deduplicated, leak-free pretraining datalist from every dataset under ``root``.

    Args:
        root: folder of downloads.
        out: output folder (``out/sources/<name>`` holds each prepared dataset and its cache).
        exclude: test sets to hold out: datalist JSON paths (every list in them), or names of dataset
            folders under ``root`` (their prepared ``test`` list); a list, or one comma-separated string
            (``"busi,ddti"``). Checked before anything is prepared.
        frame_stride: keep every N-th frame of videos, cines and volumes.
        radius: near-duplicate Hamming radius.
        progress: show progress bars (only on a terminal).

    Returns:
        ``{"table": text, "sources": [per-source rows], "dedup": dedup summary, "datalist": path}``.

    Raises:
        FileNotFoundError: an ``exclude`` item that is neither a file nor a dataset folder under ``root`` (the
            message names the folders there).
    """
    out = Path(out)
    sources = find_datasets(root)
    folders = [d.name for d in sources]
    excluded = as_names(exclude)
    for item in excluded:  # checked before hours of preparing
        if item not in folders and not os.path.isfile(item):
            raise FileNotFoundError(f"--exclude {item!r} is neither a datalist file nor a dataset folder under {root}; "
                                    f"the dataset folders there are: {', '.join(folders) or 'none'}")
    prepared = {}
    for d in sources:
        prepared[d.name] = prepare(d, out / "sources" / d.name, cache=True, frame_stride=frame_stride, progress=progress)
    lists = [out / "sources" / name / "datalist.json" for name in prepared]
    tests = []
    for item in excluded:
        if item in prepared:  # a dataset name: its test list
            data = json.loads((out / "sources" / item / "datalist.json").read_text(encoding="utf-8"))
            path = out / "tests" / f"{item}_test.json"
            atomic_write_json({"test": data["test"]}, path)
            tests.append(path)
        else:
            tests.append(Path(item))
    dd = dedup(lists, out / "dedup", exclude=tests or None, radius=radius, progress=progress)
    drop = _redundant(json.loads((out / "dedup" / "groups.json").read_text(encoding="utf-8"))["groups"], radius)
    names = output_names(lists)
    pretraining, rows = [], []
    for name, lst, written in zip(prepared, lists, names):
        data_path = out / "dedup" / written if tests else lst
        data = json.loads(Path(data_path).read_text(encoding="utf-8"))
        before = len(json.loads(lst.read_text(encoding="utf-8"))["pretraining"])
        kept = [e for e in data["pretraining"] if (e["image"], e.get("frame")) not in drop]
        pretraining.extend(dict(e, source=name) for e in kept)
        s = prepared[name]
        rows.append({"source": name, "dataset": s["dataset"] or "", "organ": s["organ"], "files": s["counts"]["files"],
                     "images": s["counts"]["images"], "frames": s["counts"]["frames"],
                     "test_leaks_removed": before - len(data["pretraining"]),
                     "duplicates_removed": len(data["pretraining"]) - len(kept), "kept": len(kept)})
    atomic_write_json({"pretraining": pretraining, "training": [], "sources": rows}, out / "datalist.json")
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return {"table": _table(rows), "sources": rows, "dedup": dd, "datalist": str(out / "datalist.json")}


def _redundant(groups: list[dict], radius: int) -> set[tuple[str, int | None]]:
    """Pretraining entries to drop: in each duplicate group, a member is kept unless it is pixel-identical or
    within ``radius`` of a member already kept (in source order). Groups are connected components, so a
    chain of gradually changing frames (a clip) keeps one frame per ``radius`` of change, not one in all."""
    drop = set()
    for group in groups:
        kept: list[int] = []
        seen = set()
        for m in group["members"]:
            key = (m["image"], m["frame"])
            if m["list"] != "pretraining" or key in seen:
                continue
            seen.add(key)
            h = int(m["hash"], 16)
            if group["exact"] and kept or any(bin(h ^ k).count("1") <= radius for k in kept):
                drop.add(key)
            else:
                kept.append(h)
    return drop


def _table(rows: list[dict]) -> str:
    cols = list(rows[0]) if rows else []
    total = {c: sum(r[c] for r in rows) if isinstance(rows[0][c], int) else "" for c in cols}
    total["source"] = "total"
    cells = [cols] + [[str(r[c]) for c in cols] for r in rows + [total]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    lines = ["  ".join(v.ljust(w) if i < 3 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
