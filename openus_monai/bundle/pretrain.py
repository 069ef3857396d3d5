"""Small helpers the pretraining bundle's configs call."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ignite import distributed as idist

from ..data import build_datalist, ensure_demo_data

__all__ = ["latest_checkpoint", "pretraining_datalist", "world_size"]

_STEP = re.compile(r"(\d+)")


def pretraining_datalist(dataset_dir: str | os.PathLike | None, demo_images: int = 48, seed: int = 0) -> list[dict]:
    """Every image of ``dataset_dir`` (``datalist.json``, ``labels.csv`` or a folder; all splits), each
    with its dataset ``index`` (the key of the masking handler's loss memory). An empty or data-less
    ``dataset_dir`` gets the generated demo data.
    """
    root = ensure_demo_data(dataset_dir or None, n=demo_images, seed=seed)
    entries = build_datalist(root, "pretraining", seed=seed)["training"]
    return [dict(entry, index=i) for i, entry in enumerate(entries)]


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> str | None:
    """The newest training checkpoint in ``ckpt_dir`` (``*.pt`` other than ``backbone.pt``; the final one
    first, then the highest step number in the name), or None."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return None
    files = [p for p in folder.glob("*.pt") if p.name != "backbone.pt" and not p.name.startswith(".")]
    if not files:
        return None

    def rank(p: Path) -> tuple[int, int]:
        steps = [int(s) for s in _STEP.findall(p.stem)]
        return (1 if "final" in p.stem else 0, steps[-1] if steps else -1)

    return str(max(files, key=rank))


def world_size() -> int:
    """Processes in the run (1 without torch.distributed)."""
    return idist.get_world_size()
