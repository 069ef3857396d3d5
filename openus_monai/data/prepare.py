"""``prepare``: turn a public ultrasound download (any folder tree) into a MONAI datalist and a report.

Every file below ``root`` is looked at once:

1. by name: image, DICOM, volume or video (:func:`~openus_monai.data.formats.source_kind`), else it is
   reported as skipped (a table, a document, a ``.mat`` ...);
2. by header (:func:`~openus_monai.data.formats.probe`): empty, truncated, unreadable, 1-pixel files and
   videos without frames are skipped with the reason;
3. by layout and content: a file in a mask folder (``masks``, ``labels``, ...), named like a mask
   (``*_mask``, ``*_Annotation``, ...), matching the catalog's mask pattern, or whose pixels are a label
   map (a few values cover almost every pixel) is a *mask*; masks are paired with the image of the same
   name and are never listed as images. A mask location whose content looks like an image, or a
   mask-like file that pairs with no image, is skipped with the reason.

Labels (class from a CSV or the folder), patient/case groups and published splits come from the catalog
layout of the dataset (:mod:`openus_monai.data.catalog`) or from a ``labels.csv`` in the project's format;
without a published split, seeded group-aware stratified splits are drawn
(:func:`~openus_monai.data.splits.group_splits`).

Outputs under ``out`` (``root`` is never written to): ``datalist.json`` (``pretraining`` list of every
usable image or frame; ``training`` / ``validation`` / ``test`` lists with ``label`` and/or ``mask``
where the layout has them), ``report.json`` and ``report.csv`` (every file: used or skipped, and why) and,
with ``cache``, 8-bit PNGs of every frame (and mask) under ``out/cache``, which the lists then point to.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .catalog import find_dataset
from .dedup import DEFAULT_RADIUS, duplicate_groups, hash_entries
from .formats import iter_frames, probe, source_kind, to_uint8
from .readers import SPLIT_ALIASES, read_labels_csv
from .splits import group_splits
from ..io import atomic_path, atomic_write_json
from ..terminal import progress_bar
from .validation import InvalidImageError

__all__ = ["MASK_DIR_NAMES", "is_label_map", "prepare", "summary_table"]

logger = logging.getLogger(__name__)

#: folder names that hold masks / annotations in common layouts
MASK_DIR_NAMES = frozenset({"mask", "masks", "label", "labels", "labelstr", "labelsts", "annotation", "annotations",
                            "gt", "groundtruth", "ground_truth", "segmentation", "segmentations", "seg"})
# file-name suffixes of masks: BUSI "x_mask", "x_mask_1", HC18 "x_Annotation", "x_seg", "x_gt", "x_label"
_MASK_SUFFIX = re.compile(r"[_\- ](mask|masks|annotation|seg|segmentation|gt|label|labels)(?:[_\- ]?\d+)?$", re.IGNORECASE)
_DATALIST_KEYS = ("training", "validation", "test")


def _value_counts(frame: np.ndarray) -> np.ndarray:
    """Pixel count of every distinct value (bincount for 8/16-bit integers: no sort)."""
    flat = np.asarray(frame).ravel()
    if flat.dtype in (np.uint8, np.uint16, np.bool_):
        counts = np.bincount(flat.astype(np.int64) if flat.dtype == np.bool_ else flat)
        return counts[counts > 0]
    return np.unique(flat, return_counts=True)[1]


def is_label_map(frame: np.ndarray, coverage: float = 0.97, max_values: int = 16) -> bool:
    """Whether a 2D frame is a label map (mask) rather than an ultrasound image, from its values.

    A mask has a few values (class indices, 0/255) that cover almost every pixel, even after lossy
    compression (a JPEG mask keeps most pixels at its two levels); B-mode speckle spreads over many
    grey levels. The test: the ``max_values`` most frequent values cover at least ``coverage`` of
    the pixels.

    Args:
        frame: ``[H, W]`` array.
        coverage: fraction of pixels the most frequent values must cover.
        max_values: how many distinct values a label map may have.
    """
    counts = _value_counts(frame)
    if len(counts) <= max_values:
        return True
    top = np.sort(counts)[-max_values:].sum()
    return bool(top >= coverage * counts.sum())


def _stem(path: str) -> str:
    name = os.path.basename(path)
    low = name.lower()
    for ext in (".nii.gz",):
        if low.endswith(ext):
            return name[: -len(ext)]
    return os.path.splitext(name)[0]


def _pair_key(rel: str) -> tuple[str, str]:
    """What pairs a mask with its image: the split folder above it (if any) and the stem without mask suffix."""
    parts = [p.lower() for p in Path(rel).parts[:-1]]
    split = next((SPLIT_ALIASES[p] for p in parts if p in SPLIT_ALIASES), "")
    return split, _MASK_SUFFIX.sub("", _stem(rel)).lower()


def _glob_match(rel: str, pattern: str | None) -> bool:
    if not pattern:
        return False
    pattern = pattern.replace("**/", "*")  # fnmatch's '*' crosses folders already
    return fnmatch.fnmatch(rel, pattern)


@dataclass
class _Source:
    """One usable image or mask file found in the download."""

    path: str
    rel: str
    kind: str
    n_frames: int
    role: str  # "image" or "mask"
    values: int = 0
    masks: list[str] = field(default_factory=list)


def _layout_says_mask(rel: str, layout: dict) -> bool:
    dirs = {p.lower() for p in Path(rel).parts[:-1]}
    return bool(dirs & MASK_DIR_NAMES) or bool(_MASK_SUFFIX.search(_stem(rel))) or _glob_match(rel, layout.get("masks"))


def _report_row(rel: str, kind: str | None, role: str, status: str, reason: str = "", frames: int = 0) -> dict:
    return {"path": rel, "kind": kind or "", "role": role, "status": status, "reason": reason, "frames": frames}


# --------------------------------------------------------------------------------------------- labels


def _csv_labels(root: Path, spec: dict) -> dict[str, str]:
    """``{key: label}`` from the catalog's label CSV spec (``csv``, ``header``, ``key_column``, ``value_column``)."""
    path = root / spec["csv"]
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if spec.get("header", True):
        head, rows = [h.strip() for h in rows[0]], rows[1:]
        k, v = head.index(spec["key_column"]), head.index(spec["value_column"])
    else:
        k, v = int(spec["key_column"]), int(spec["value_column"])
    out = {}
    for row in rows:
        if len(row) > max(k, v) and row[k].strip() and row[v].strip():
            value = row[v].strip()
            try:  # "2.0" -> "2": a severity score is a class, not a float
                value = str(int(float(value))) if float(value).is_integer() else value
            except ValueError:
                pass
            out[row[k].strip()] = value
    return out


def _label_of(src: _Source, layout: dict, table: dict[str, str]) -> str | None:
    if layout.get("class_from") == "folder":
        return Path(src.rel).parent.name
    spec = layout.get("labels")
    if spec and table:
        m = re.match(spec.get("key", "(.*)"), _stem(src.rel))
        return table.get(m.group(1)) if m else None
    return None


def _group_of(rel: str, layout: dict) -> str:
    pattern = layout.get("group")
    if pattern:
        m = re.search(pattern, rel if "/" in pattern else _stem(rel))
        if m:
            return "/".join(g for g in m.groups() if g) or m.group(0)
    return rel  # no patient/case rule: every file is its own group (frames of a file stay together)


# ---------------------------------------------------------------------------------------------- cache


def _cache_path(out: Path, rel: str, frame: int | None, mask: bool) -> Path:
    base = out / "cache" / ("masks" if mask else "images") / rel
    suffix = f"_f{frame:05d}.png" if frame is not None else ".png"
    return base.with_name(base.name.replace(".", "_") + suffix)


def _write_png(path: Path, frame: np.ndarray, mask: bool) -> None:
    from PIL import Image

    if mask:
        if frame.max(initial=0) > 255 or frame.min(initial=0) < 0:
            raise InvalidImageError(str(path), f"mask values {frame.min()}..{frame.max()} do not fit 8 bits")
        arr = frame.astype(np.uint8)
    else:
        arr = to_uint8(frame)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG", compress_level=1)


# --------------------------------------------------------------------------------------------- public


def _walk(root: Path) -> Iterable[str]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            yield os.path.join(folder, f)


def prepare(
    root: str | os.PathLike,
    out: str | os.PathLike,
    dataset: str | None = None,
    cache: bool = False,
    frame_stride: int = 1,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    progress: bool = True,
    workers: int = 2,
    dedup_groups: bool = True,
    radius: int = DEFAULT_RADIUS,
    published_splits: bool = True,
) -> dict:
    """Scan a download and write ``out/datalist.json``, ``out/report.json``, ``out/report.csv`` (and the cache).

    Args:
        root: the download (read only).
        out: output folder (created; must not be inside ``root``).
        dataset: catalog name of the download; by default the catalog entry named like ``root``'s folder,
            else a generic layout (masks by folder/name/content, splits from split folders).
        cache: write 8-bit PNGs of every used frame (and mask) under ``out/cache`` and list those.
        frame_stride: keep every ``frame_stride``-th frame of videos, DICOM cines and volumes.
        seed: seed of the drawn splits.
        fractions: (train, val, test) fractions of drawn splits.
        progress: show progress bars (only on a terminal: :func:`openus_monai.terminal.progress_bar`).
        workers: threads that read files (image decoders release the GIL).
        dedup_groups: merge the groups of near-duplicate labelled images (first frames), so drawn splits
            keep duplicates on one side; published splits are kept, and duplicate groups that straddle
            them are counted in ``duplicate_groups_across_published_splits``.
        radius: near-duplicate Hamming radius (:data:`~openus_monai.data.dedup.DEFAULT_RADIUS`).
        published_splits: keep the splits a download publishes (split column, ``test`` folders); False
            draws new group-aware splits for every labelled image (e.g. BUSI, whose published split leaks).

    Returns:
        the report summary: ``dataset``, ``counts`` (files found/used/skipped, images, masks, frames,
        entries per list) and ``skip_reasons``; the same as ``report.json`` without the file rows.
    """
    root, out = Path(root).resolve(), Path(out).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    if out == root or root in out.parents:
        raise ValueError(f"--out {out} is inside --root {root}; prepare never writes into the download")
    out.mkdir(parents=True, exist_ok=True)
    entry = find_dataset(dataset) if dataset else find_dataset(root)
    if dataset and entry is None:
        raise ValueError(f"dataset {dataset!r} is not in the catalog (python -m openus_monai catalog)")
    layout = (entry or {}).get("layout", {})
    rows: list[dict] = []
    sources: list[_Source] = []
    paths = list(_walk(root))
    with ThreadPoolExecutor(max(1, int(workers))) as pool:  # decoders release the GIL
        scanned = pool.map(lambda p: _scan_file(p, root, layout), paths)
        for row, source in progress_bar(scanned, "scan", progress, total=len(paths), unit="file"):
            if row is not None:
                rows.append(row)
            if source is not None:
                sources.append(source)
    _pair_masks(sources, rows)
    # labels, groups, splits
    table = _csv_labels(root, layout["labels"]) if layout.get("labels") else {}
    csv_records = _project_labels(root, layout)
    if table or csv_records:
        used_tables = [layout["labels"]["csv"]] if table else [layout.get("labels_csv", "labels.csv")]
        for r in rows:
            if r["path"] in used_tables:
                r.update(status="used", role="labels", reason="")
    items = []
    for s in (s for s in sources if s.role == "image"):
        rec = csv_records.get(os.path.normpath(s.path), {})
        label = rec.get("label") or _label_of(s, layout, table)
        split = (rec.get("split") or _split_from_folders(s.rel)) if published_splits else None
        items.append({"src": s, "label": label, "split": split, "group": _group_of(s.rel, layout), "mask": s.masks[0] if s.masks else None})
    leaks = _merge_duplicate_groups(items, radius) if dedup_groups else None
    _assign_missing_splits(items, seed, fractions)
    lists: dict[str, list] = {"pretraining": [], **{k: [] for k in _DATALIST_KEYS}}
    frames_total = 0
    bar = progress_bar(items, "frames" if not cache else "cache", progress, unit="file")
    for it in bar:
        s = it["src"]
        sequence = s.kind in ("dicom", "volume", "video") or s.n_frames > 1
        labelled = it["label"] is not None or it["mask"] is not None
        try:
            frames = _frame_entries(s, it, out, root, cache, frame_stride, sequence)
        except InvalidImageError as e:
            rows.append(_report_row(s.rel, s.kind, "image", "skipped", e.reason, s.n_frames))
            continue
        except (ValueError, KeyError, RuntimeError) as e:  # e.g. a mask frame missing: reported, the run goes on
            rows.append(_report_row(s.rel, s.kind, "image", "skipped", f"unexpected error ({type(e).__name__}: {e})", s.n_frames))
            continue
        frames_total += len(frames)
        rows.append(_report_row(s.rel, s.kind, "image", "used", "", len(frames)))
        if it["mask"]:
            rows.append(_report_row(os.path.relpath(it["mask"], root).replace(os.sep, "/"), source_kind(it["mask"]), "mask", "used", "", len(frames)))
        for image_entry, labelled_entry in frames:
            lists["pretraining"].append(image_entry)
            if labelled:
                lists[it["split"]].append(labelled_entry)
    rows.sort(key=lambda r: r["path"])
    counts = Counter(r["status"] for r in rows)
    roles = Counter(r["role"] for r in rows if r["status"] == "used")
    summary = {
        "root": str(root),
        "out": str(out),
        "dataset": entry["name"] if entry else None,
        "organ": entry["organ"] if entry else "unknown",
        "cache": bool(cache),
        "frame_stride": int(frame_stride),
        "counts": {
            "files": len(rows), "used": counts["used"], "skipped": counts["skipped"],
            "images": roles["image"], "masks": roles["mask"], "frames": frames_total,
            **{k: len(v) for k, v in lists.items()},
        },
        "labels": dict(sorted(Counter(str(e["label"]) for k in _DATALIST_KEYS for e in lists[k] if "label" in e).items())),
        "duplicate_groups_across_published_splits": leaks,
        "skip_reasons": dict(Counter(_reason_kind(r["reason"]) for r in rows if r["status"] == "skipped").most_common()),
    }
    datalist = {**{k: v for k, v in lists.items()}, "dataset": summary["dataset"], "root": str(root)}
    if any("label" in e for k in _DATALIST_KEYS for e in lists[k]):
        datalist["classes"] = sorted({e["label"] for k in _DATALIST_KEYS for e in lists[k] if "label" in e})
    atomic_write_json(datalist, out / "datalist.json")
    atomic_write_json({**summary, "files": rows}, out / "report.json")
    with open(out / "report.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["path", "kind", "role", "status", "reason", "frames"])
        writer.writeheader()
        writer.writerows(rows)
    return summary


def _scan_file(path: str, root: Path, layout: dict) -> tuple[dict | None, _Source | None]:
    """Look at one file: ``(report row, None)`` when it is skipped, ``(None, source)`` when it is an image or mask."""
    rel = os.path.relpath(path, root).replace(os.sep, "/")
    kind = source_kind(path)
    if kind is None:
        ext = os.path.splitext(path)[1].lower() or "no extension"
        return _report_row(rel, None, "other", "skipped", f"not an image, volume or video ({ext})"), None
    try:
        info = probe(path, decode=False)
        # content: the first frame, decoded here (a truncated file fails now)
        first = next(iter_frames(path, stride=info.n_frames + 1))[1]
    except InvalidImageError as e:
        return _report_row(rel, kind, "unknown", "skipped", e.reason), None
    except Exception as e:  # a reader bug must not stop the scan half-way: report it with the file
        return _report_row(rel, kind, "unknown", "skipped", f"unexpected error ({type(e).__name__}: {e})"), None
    n_values = len(_value_counts(first))
    label_map = kind != "video" and is_label_map(first)
    says_mask = _layout_says_mask(rel, layout)
    if says_mask and not label_map:
        return _report_row(rel, kind, "mask", "skipped", "in a mask location but its content looks like an image", info.n_frames), None
    if not says_mask and n_values == 1 and info.n_frames == 1:  # a clip may start black: its frames are checked one by one
        return _report_row(rel, kind, "image", "skipped", "blank image (one value)", info.n_frames), None
    return None, _Source(path, rel, kind, info.n_frames, "mask" if label_map else "image", n_values)


def _pair_masks(sources: list[_Source], rows: list[dict]) -> None:
    """Pair every mask with its image (same split folder and stem, else the same stem with the longest
    common folder); unpaired, extra and frame-count-mismatched masks are reported as skipped."""
    by_stem: dict[str, list[_Source]] = {}
    for s in sources:
        if s.role == "image":
            by_stem.setdefault(_pair_key(s.rel)[1], []).append(s)
    for m in (s for s in sources if s.role == "mask"):
        split, stem = _pair_key(m.rel)
        candidates = by_stem.get(stem, [])
        same_split = [c for c in candidates if _pair_key(c.rel)[0] == split]
        candidates = same_split or candidates
        img = max(candidates, key=lambda c: len(os.path.commonpath([c.rel, m.rel])), default=None)
        if img is None:
            rows.append(_report_row(m.rel, m.kind, "mask", "skipped", "mask (label-map content or mask location) with no image of the same name", m.n_frames))
        elif img.masks:
            rows.append(_report_row(m.rel, m.kind, "mask", "skipped", f"another mask of {img.rel} (the first one is used)", m.n_frames))
        elif img.n_frames != m.n_frames:
            rows.append(_report_row(m.rel, m.kind, "mask", "skipped", f"{m.n_frames} frames, its image {img.rel} has {img.n_frames}", m.n_frames))
        else:
            img.masks.append(m.path)


def _reason_kind(reason: str) -> str:
    """A reason without its numbers and file names, to count skips by kind."""
    return re.sub(r"\d+|[^ ]*/[^ ]*", "#", reason)


def _project_labels(root: Path, layout: dict) -> dict[str, dict]:
    """Records of a ``labels.csv`` in the project's format (``image[,mask][,label][,split]``), by image path."""
    path = root / layout.get("labels_csv", "labels.csv")
    if not path.is_file():
        return {}
    try:
        records = read_labels_csv(path, check_exists=())
    except ValueError:  # another tool's labels.csv (no 'image' column): not this format
        return {}
    return {os.path.normpath(r["image"]): r for r in records}


def _split_from_folders(rel: str) -> str | None:
    for part in Path(rel).parts[:-1]:
        split = SPLIT_ALIASES.get(part.lower())
        if split:
            return split
    return None


def _merge_duplicate_groups(items: list[dict], radius: int) -> int:
    """Join the groups of labelled items whose first frames are near duplicates (in place).

    Returns:
        how many duplicate groups hold items of different published splits (leaks of the published split).
    """
    labelled = [it for it in items if it["label"] is not None or it["mask"] is not None]
    if len(labelled) < 2:
        return 0
    hashes, digests, errors = hash_entries([{"image": it["src"].path, "frame": 0 if it["src"].n_frames > 1 else None} for it in labelled])
    leaks = 0
    for g in duplicate_groups(hashes, digests, radius, valid=np.array([e is None for e in errors])):
        members = [labelled[k] for k in g]
        leaks += len({it["split"] for it in members if it["split"]}) > 1
        joined = min(it["group"] for it in members)
        old = {it["group"] for it in members}
        for it in labelled:
            if it["group"] in old:
                it["group"] = joined
    return leaks


def _assign_missing_splits(items: list[dict], seed: int, fractions: tuple[float, float, float]) -> None:
    """Splits for labelled items without one: drawn by group, stratified by label (published ones kept).

    When only a test split is published (a ``test`` folder), the rest is training with a validation
    hold-out drawn by group.
    """
    labelled = [it for it in items if it["label"] is not None or it["mask"] is not None]
    todo = [it for it in labelled if it["split"] is None]
    if not todo:
        return
    published = {it["split"] for it in labelled if it["split"]}
    if "test" in published:  # keep the published test set; hold out validation from the rest
        f = (1.0 - fractions[1], fractions[1], 0.0)
    else:
        f = tuple(fractions)
    names = {"train": "training", "val": "validation", "test": "test"}
    splits = group_splits([it["group"] for it in todo], [it["label"] for it in todo], f, seed)
    for it, s in zip(todo, splits):
        it["split"] = names[s]


def _frame_entries(s: _Source, it: dict, out: Path, root: Path, cache: bool, stride: int, sequence: bool) -> list[tuple[dict, dict]]:
    """``(pretraining entry, labelled entry)`` per kept frame; with ``cache`` the PNGs are written here."""
    mask_frames = {}
    if it["mask"] and cache:
        mask_frames = {k: f for k, f in iter_frames(it["mask"], stride=stride if sequence else 1, mask=True)}
    result = []
    extra = {k: it[k] for k in ("label",) if it[k] is not None}
    for k, frame in iter_frames(s.path, stride=stride if sequence else 1) if (cache or not sequence) else ((k, None) for k in range(0, s.n_frames, stride)):
        fk = k if sequence else None
        if cache and sequence and not it["mask"] and frame.min() == frame.max():
            continue  # a blank frame of a clip (fade-in, frozen probe): nothing to learn from
        if cache:
            img_path = _cache_path(out, s.rel, fk, mask=False)
            _write_png(img_path, frame, mask=False)
            image = {"image": str(img_path), "source": s.path, **({"frame": k} if sequence else {})}
            pre = {"image": str(img_path)}
            lab = dict(image, **extra, group=it["group"])
            if it["mask"]:
                mask_path = _cache_path(out, os.path.relpath(it["mask"], root).replace(os.sep, "/"), fk, mask=True)
                _write_png(mask_path, mask_frames[k], mask=True)
                lab["mask"] = str(mask_path)
            lab.pop("frame", None)  # cached frames are still images
            image_source = {"source_frame": k} if sequence else {}
            lab.update(image_source)
        else:
            pre = {"image": s.path, **({"frame": k} if sequence else {})}
            lab = dict(pre, **extra, group=it["group"], **({"mask": it["mask"]} if it["mask"] else {}))
        result.append((pre, lab))
    return result


def summary_table(summaries: list[dict]) -> str:
    """A text table of :func:`prepare` summaries (one row per dataset)."""
    cols = ("dataset", "organ", "files", "used", "skipped", "images", "masks", "frames", "pretraining", "training", "validation", "test")
    rows = [list(cols)]
    for s in summaries:
        c = s["counts"]
        rows.append([str(s.get("dataset") or Path(s["root"]).name), str(s.get("organ", ""))[:24], *(str(c[k]) for k in cols[2:])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = ["  ".join(v.rjust(w) if i > 1 else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
