"""Small helpers the pretraining bundle's configs call."""

from __future__ import annotations

import os

from ignite import distributed as idist

from ..data import InvalidFiles, build_datalist, ensure_demo_data, validate_datalist
from .checkpoints import latest_checkpoint  # noqa: F401  (its former home; kept importable from here)

__all__ = ["latest_checkpoint", "pretraining_datalist", "world_size"]


def pretraining_datalist(
    dataset_dir: str | os.PathLike | None,
    demo_images: int = 48,
    seed: int = 0,
    invalid_files: InvalidFiles | None = None,
) -> list[dict]:
    """Every valid image of ``dataset_dir`` (``datalist.json``, ``labels.csv`` or a folder; all splits), each
    with its dataset ``index`` (the key of the masking handler's loss memory). An empty or data-less
    ``dataset_dir`` gets the generated demo data.

    Every file is checked from its header first (:func:`~openus_monai.data.validate_datalist`): by
    default one error lists all invalid files before training starts; with ``invalid_files.skip`` they are
    left out (and reported), and the indices count the valid images only.
    """
    root = ensure_demo_data(dataset_dir or None, n=demo_images, seed=seed)
    entries = build_datalist(root, "pretraining", seed=seed, check_exists=False)["training"]  # missing files: reported below
    entries = validate_datalist(entries, invalid_files, keys=("image",))
    return [dict(entry, index=i) for i, entry in enumerate(entries)]


def world_size() -> int:
    """Processes in the run (1 without torch.distributed)."""
    return idist.get_world_size()
