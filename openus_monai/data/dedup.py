"""``dedup``: exact and near duplicates within and across datalists, and test-set leakage removal.

Every entry (``{"image": path}``, optionally ``"frame"``) of every list of the given datalists is read
once (:func:`~openus_monai.data.formats.read_frame`), hashed (:func:`~openus_monai.data.hashing.phash`
and a digest of the decoded pixels), and near pairs are found through the multi-index
(:func:`~openus_monai.data.hashing.near_pairs`); connected pairs form duplicate groups. With
``exclude``, every entry within the radius of an image of the excluded (test) datalists is removed
from the written copies of the inputs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .formats import read_frame, to_uint8
from .hashing import near_pairs, phash
from ..io import atomic_write_json
from ..options import as_names
from ..terminal import progress_bar
from .validation import InvalidImageError

__all__ = ["DEFAULT_RADIUS", "dedup", "duplicate_groups", "hash_entries", "load_entries", "output_names"]

#: Hamming radius of a near duplicate (64-bit hash). On BUSI the nearest-neighbour distances have a
#: gap from 10 to 14 bits between re-saved copies and distinct images; a JPEG re-save resized by 0.9
#: and brightened 10% lands at 0-4 bits, a 3% crop per side at 6-12.
DEFAULT_RADIUS: int = 10
_LISTS = ("pretraining", "training", "validation", "test")


def load_entries(datalist: str | os.PathLike) -> list[dict]:
    """Entries of every list of a datalist JSON (``pretraining``, ``training``, ``validation``, ``test``),
    each tagged with ``_list``; relative paths are made absolute against the JSON's folder."""
    path = Path(datalist)
    data = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for name in _LISTS:
        for e in data.get(name) or []:
            e = {"image": e} if isinstance(e, str) else dict(e)
            if not os.path.isabs(e["image"]):
                e["image"] = os.path.normpath(os.path.join(path.parent, e["image"]))
            out.append({**e, "_list": name})
    return out


def _key(e: dict) -> tuple[str, int]:
    return e["image"], int(e.get("frame", -1) if e.get("frame") is not None else -1)


def _hash_one(entry: dict) -> tuple[np.uint64, str, str | None]:
    try:
        frame = to_uint8(read_frame(entry["image"], entry.get("frame")))
    except InvalidImageError as err:
        return np.uint64(0), "", err.reason
    digest = hashlib.blake2b(frame.tobytes() + str(frame.shape).encode(), digest_size=16).hexdigest()
    return phash(frame), digest, None


def hash_entries(entries: Sequence[dict], progress: bool = False, workers: int = 2) -> tuple[np.ndarray, list[str], list[str | None]]:
    """Perceptual hash and pixel digest of each entry's frame, read in ``workers`` threads.

    Returns:
        ``(hashes [N] uint64, digests, errors)``; an entry that cannot be read gets hash 0, digest ""
        and its error text (others None).
    """
    with ThreadPoolExecutor(max(1, int(workers))) as pool:  # decoding releases the GIL
        results = pool.map(_hash_one, entries)
        results = list(progress_bar(results, "hash", progress, total=len(entries), unit="img"))
    hashes = np.array([r[0] for r in results], dtype=np.uint64)
    return hashes, [r[1] for r in results], [r[2] for r in results]


def duplicate_groups(hashes: np.ndarray, digests: Sequence[str], radius: int = DEFAULT_RADIUS,
                     valid: np.ndarray | None = None) -> list[list[int]]:
    """Groups (size >= 2) of entries connected by equal pixels or a hash distance <= ``radius``.

    Args:
        hashes: ``[N]`` uint64 hashes.
        digests: pixel digests (equal digest = exact duplicate).
        radius: near-duplicate Hamming radius.
        valid: ``[N]`` bool, entries to consider (default: all).

    Returns:
        lists of entry indices, each sorted, ordered by first index.
    """
    n = len(hashes)
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    idx = np.flatnonzero(valid)
    i, j, _ = near_pairs(hashes[idx], radius)
    rows, cols = [idx[i]], [idx[j]]
    first: dict[str, int] = {}
    for k in idx:  # exact duplicates by pixels (also covers radius 0)
        d = digests[k]
        if d in first:
            rows.append(np.array([first[d]]))
            cols.append(np.array([k]))
        else:
            first[d] = int(k)
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    groups: dict[int, list[int]] = {}
    for k in idx:
        groups.setdefault(int(labels[k]), []).append(int(k))
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def output_names(paths: Sequence[Path]) -> list[str]:
    """File names of the filtered copies of ``paths`` (their names; with the parent folder when two collide)."""
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.parent.name}_{p.name}" for p in paths]


def dedup(
    datalists: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    exclude: Sequence[str | os.PathLike] | str | None = None,
    radius: int = DEFAULT_RADIUS,
    progress: bool = True,
) -> dict:
    """Find duplicate groups within and across ``datalists``; with ``exclude``, write them without test leaks.

    Writes ``out/groups.json`` (every group: members with datalist, list, image, frame, hash distance to
    the group's first member, and whether the members' pixels are identical) and ``out/groups.csv`` (one
    row per member). With ``exclude``, also ``out/<name of each input>``: the input with every entry
    removed that is within ``radius`` of (or pixel-identical to) an image of the excluded datalists, and
    ``out/excluded.csv`` listing what was removed and the test image it matched.

    Args:
        datalists: datalist JSON files.
        out: output folder.
        exclude: test datalist(s) whose images must not appear in the outputs (any of their lists): a list, or
            one comma-separated string.
        radius: near-duplicate Hamming radius (64-bit hash).
        progress: show a progress bar (only on a terminal: :func:`openus_monai.terminal.progress_bar`).

    Returns:
        summary: entries, unreadable, groups, entries in groups, exact groups, cross-datalist and
        cross-label groups, removed per datalist.

    Raises:
        FileNotFoundError: a datalist or ``exclude`` file does not exist (checked before any hashing).
    """
    paths = [Path(p) for p in datalists]
    test_paths = [Path(p) for p in as_names([exclude] if isinstance(exclude, os.PathLike) else exclude)]
    missing = [str(p) for p in paths + test_paths if not p.is_file()]
    if missing:  # before any hashing
        raise FileNotFoundError(f"datalist file(s) not found: {', '.join(missing)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict] = []
    for p in paths:
        entries.extend({**e, "_datalist": str(p)} for e in load_entries(p))
    # one hash per distinct (image, frame): a file listed in several lists is not its own duplicate
    keys = list(dict.fromkeys(_key(e) for e in entries))
    pos = {k: i for i, k in enumerate(keys)}
    hashes, digests, errors = hash_entries([{"image": k[0], "frame": None if k[1] < 0 else k[1]} for k in keys], progress)
    valid = np.array([e is None for e in errors])
    groups = duplicate_groups(hashes, digests, radius, valid)
    members_of: dict[int, list[dict]] = {}
    for e in entries:
        members_of.setdefault(pos[_key(e)], []).append(e)
    group_rows, records = [], []
    cross_datalist = cross_label = exact = 0
    for gid, g in enumerate(groups):
        ref = hashes[g[0]]
        members = []
        for k in g:
            for e in members_of[k]:
                members.append({"datalist": e["_datalist"], "list": e["_list"], "image": e["image"], "frame": e.get("frame"),
                                "label": e.get("label"), "distance": int(np.bitwise_count(hashes[k] ^ ref)),
                                "hash": f"{int(hashes[k]):016x}"})
        is_exact = len({digests[k] for k in g}) == 1
        exact += is_exact
        cross_datalist += len({m["datalist"] for m in members}) > 1
        cross_label += len({str(m["label"]) for m in members if m["label"] is not None}) > 1
        records.append({"group": gid, "exact": is_exact, "size": len(g), "members": members})
        group_rows.extend({"group": gid, "exact": is_exact, **m} for m in members)
    atomic_write_json({"radius": radius, "groups": records}, out / "groups.json")
    with open(out / "groups.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["group", "exact", "datalist", "list", "image", "frame", "label", "distance", "hash"])
        w.writeheader()
        w.writerows(group_rows)
    summary = {
        "entries": len(entries), "distinct_frames": len(keys), "unreadable": int((~valid).sum()),
        "groups": len(groups), "in_groups": sum(len(g) for g in groups), "exact_groups": exact,
        "cross_datalist_groups": cross_datalist, "cross_label_groups": cross_label, "radius": radius,
    }
    if test_paths:
        summary["removed"] = _exclude(entries, keys, pos, hashes, digests, valid, test_paths, paths, out, radius, progress)
    atomic_write_json(summary, out / "summary.json")
    return summary


def _exclude(entries, keys, pos, hashes, digests, valid, test_paths, paths, out, radius, progress) -> dict:
    tests = [e for p in test_paths for e in load_entries(p)]
    tkeys = list(dict.fromkeys(_key(e) for e in tests))
    th, td, terr = hash_entries([{"image": k[0], "frame": None if k[1] < 0 else k[1]} for k in tkeys], progress)
    tvalid = np.flatnonzero([e is None for e in terr])
    qi, ti, dist = near_pairs(th[tvalid], radius, queries=hashes)
    hit: dict[int, tuple[str, int]] = {}
    for q, t, d in zip(qi, ti, dist):
        if valid[q] and (q not in hit or d < hit[q][1]):
            hit[int(q)] = (tkeys[tvalid[t]][0], int(d))
    test_digest = {td[t]: tkeys[t][0] for t in tvalid}
    for q, k in enumerate(keys):
        if valid[q] and digests[q] in test_digest:
            hit[q] = (test_digest[digests[q]], 0)
    test_keys = set(tkeys)
    for q, k in enumerate(keys):  # the test file itself, listed in an input
        if k in test_keys:
            hit[q] = (k[0], 0)
    removed = {}
    rows = []
    for p, name in zip(paths, output_names(paths)):
        data = json.loads(p.read_text(encoding="utf-8"))
        n_removed = 0
        for lst in _LISTS:
            if not isinstance(data.get(lst), list):
                continue
            kept = []
            for e in data[lst]:
                e_abs = {"image": e} if isinstance(e, str) else dict(e)
                if not os.path.isabs(e_abs["image"]):
                    e_abs["image"] = os.path.normpath(os.path.join(p.parent, e_abs["image"]))
                q = pos.get(_key(e_abs))
                if q is not None and q in hit:
                    n_removed += 1
                    rows.append({"datalist": str(p), "list": lst, "image": e_abs["image"], "frame": e_abs.get("frame"),
                                 "test_image": hit[q][0], "distance": hit[q][1]})
                else:
                    kept.append(e_abs if not isinstance(e, str) else e_abs["image"])
            data[lst] = kept
        atomic_write_json(data, out / name)
        removed[name] = n_removed
    with open(out / "excluded.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["datalist", "list", "image", "frame", "test_image", "distance"])
        w.writeheader()
        w.writerows(rows)
    return removed
