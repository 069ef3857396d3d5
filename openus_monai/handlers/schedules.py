"""Schedules as pure functions of the global iteration, so a resumed run is the same run."""

from __future__ import annotations

import math

__all__ = ["cosine", "linear", "progress", "warmup_cosine"]


def progress(iteration: int, total: int) -> float:
    """Fraction of training done at 1-based ``iteration`` of ``total``: 0 at the first, 1 at the last."""
    if total <= 1:
        return 1.0
    return min(max((iteration - 1) / (total - 1), 0.0), 1.0)


def cosine(start: float, end: float, p: float) -> float:
    """Half-cosine from ``start`` (p = 0) to ``end`` (p = 1)."""
    return end + (start - end) * (1 + math.cos(math.pi * p)) / 2


def linear(start: float, end: float, p: float) -> float:
    """Straight line from ``start`` (p = 0) to ``end`` (p = 1)."""
    return start + (end - start) * p


def warmup_cosine(base: float, final: float, iteration: int, total: int, warmup: int, warmup_start: float = 0.0) -> float:
    """Linear warm-up from ``warmup_start`` (first iteration) to ``base`` (iteration ``warmup``), then a
    cosine from ``base`` to ``final`` (last iteration ``total``), as DINO's schedules."""
    if iteration <= warmup:
        return linear(warmup_start, base, progress(iteration, warmup))
    return cosine(base, final, progress(iteration - warmup, total - warmup))
