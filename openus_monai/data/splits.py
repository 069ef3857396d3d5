"""Seeded, stratified splitting of datalist entries: train/val/test, validation hold-out, label subsets.

Every function is deterministic for a seed and independent of the order in which classes appear:
each stratum gets its own generator, seeded from ``(seed, crc32(purpose, stratum))``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["assign_splits", "group_by", "group_splits", "split_validation", "subset_by_label_ratio"]


def _stratum_rng(seed: int, stratum: Hashable, purpose: str) -> np.random.Generator:
    """A generator for one stratum and one purpose, stable across processes (unlike ``hash``)."""
    return np.random.default_rng([int(seed), zlib.crc32(f"{purpose}:{stratum!r}".encode("utf-8"))])


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def group_by(entries: Sequence[dict], key: str | None) -> dict[Hashable, list[int]]:
    """Indices of ``entries`` grouped by the value of ``key`` (one group ``None`` when key is None).

    Args:
        entries: datalist entries (dicts).
        key: entry key to stratify by; entries without it fall into the ``None`` group.

    Returns:
        ``{value: [indices in input order]}``, groups sorted by ``repr`` of the value.
    """
    groups: dict[Hashable, list[int]] = {}
    for i, entry in enumerate(entries):
        groups.setdefault(entry.get(key) if key else None, []).append(i)
    return dict(sorted(groups.items(), key=lambda kv: repr(kv[0])))


def assign_splits(
    labels: Sequence[Hashable], fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0
) -> list[str]:
    """Stratified train/val/test assignment (per class: a seeded permutation, then test, val, train).

    Args:
        labels: class of every item.
        fractions: (train, val, test) fractions; they must sum to 1. Per class the val and test
            counts are rounded half up and train gets the rest.
        seed: random seed.

    Returns:
        one of ``"train"``, ``"val"``, ``"test"`` per item, in input order.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}.")
    splits = ["train"] * len(labels)
    for label, idx in group_by([{"c": c} for c in labels], "c").items():
        order = _stratum_rng(seed, label, "splits").permutation(len(idx))
        n_test = _round_half_up(fractions[2] * len(idx))
        n_val = min(_round_half_up(fractions[1] * len(idx)), len(idx) - n_test)
        for rank, j in enumerate(order):
            if rank < n_test:
                splits[idx[j]] = "test"
            elif rank < n_test + n_val:
                splits[idx[j]] = "val"
    return splits


def split_validation(
    entries: Sequence[dict], val_fraction: float = 0.1, seed: int = 0, stratify_key: str | None = None
) -> tuple[list[dict], list[dict]]:
    """Hold out a seeded, stratified validation subset of training entries.

    Per stratum, ``round(val_fraction * n)`` entries (at least 1 when the stratum has 2 or more
    entries and ``val_fraction > 0``, and never the whole stratum) go to validation.

    Args:
        entries: training entries.
        val_fraction: fraction in [0, 1) to hold out.
        seed: random seed.
        stratify_key: entry key to stratify by (e.g. ``"label"``), or None for a plain random split.

    Returns:
        ``(train, validation)``, both in input order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    held_out: set[int] = set()
    if val_fraction > 0:
        for stratum, idx in group_by(entries, stratify_key).items():
            if len(idx) < 2:
                continue
            n_val = min(max(1, _round_half_up(val_fraction * len(idx))), len(idx) - 1)
            order = _stratum_rng(seed, stratum, "validation").permutation(len(idx))
            held_out.update(idx[j] for j in order[:n_val])
    train = [e for i, e in enumerate(entries) if i not in held_out]
    val = [e for i, e in enumerate(entries) if i in held_out]
    return train, val


def subset_by_label_ratio(
    entries: Sequence[dict], label_ratio: float, seed: int = 0, stratify_key: str | None = None
) -> list[dict]:
    """Seeded, stratified, nested subset of training entries for label-efficiency experiments.

    Per stratum, one seeded permutation is drawn and its first ``ceil(label_ratio * n)`` entries
    (at least 1) are kept. The permutation does not depend on the ratio, so for one seed the subset
    at a smaller ratio is contained in the subset at a larger one.

    Args:
        entries: training entries.
        label_ratio: fraction in (0, 1]; 1 returns all entries.
        seed: random seed.
        stratify_key: entry key to stratify by (e.g. ``"label"``), or None.

    Returns:
        the kept entries, in input order.
    """
    if not 0.0 < label_ratio <= 1.0:
        raise ValueError(f"label_ratio must be in (0, 1], got {label_ratio}.")
    if label_ratio == 1.0:
        return list(entries)
    kept: set[int] = set()
    for stratum, idx in group_by(entries, stratify_key).items():
        # the small epsilon keeps e.g. 0.7 * 10 = 7.000000000000001 at 7
        n_keep = max(1, math.ceil(label_ratio * len(idx) - 1e-9))
        order = _stratum_rng(seed, stratum, "label_ratio").permutation(len(idx))
        kept.update(idx[j] for j in order[:n_keep])
    return [e for i, e in enumerate(entries) if i in kept]


def group_splits(
    groups: Sequence[Hashable],
    labels: Sequence[Hashable | None] | None = None,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
) -> list[str]:
    """Seeded train/val/test assignment that keeps every group (patient, case, duplicate group) on one side.

    Groups, not items, are assigned (:func:`assign_splits`), stratified by each group's most common
    label, so the fractions hold in groups; item fractions follow when groups are of similar size.

    Args:
        groups: group id of every item (items of one group always share a split).
        labels: class of every item (None: unlabeled), or None for no stratification.
        fractions: (train, val, test) fractions of groups, summing to 1.
        seed: random seed.

    Returns:
        ``"train"``, ``"val"`` or ``"test"`` per item, in input order.
    """
    labels = [None] * len(groups) if labels is None else list(labels)
    if len(labels) != len(groups):
        raise ValueError(f"{len(groups)} groups but {len(labels)} labels")
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    order = sorted(members, key=repr)  # independent of input order
    group_label = []
    for g in order:
        counts: dict[str, int] = {}
        for i in members[g]:
            counts[repr(labels[i])] = counts.get(repr(labels[i]), 0) + 1
        group_label.append(max(sorted(counts), key=counts.get))
    split_of = dict(zip(order, assign_splits(group_label, fractions, seed)))
    return [split_of[g] for g in groups]
