"""Demo data on demand: generate the synthetic data set where no user data set is given."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .readers import is_image_file
from .synthetic import MANIFEST, synthesize_dataset

__all__ = ["DEMO_DIR_ENV", "default_demo_dir", "ensure_demo_data", "has_dataset"]

#: environment variable overriding the default demo-data folder
DEMO_DIR_ENV = "OPENUS_MONAI_DEMO_DIR"


def default_demo_dir() -> Path:
    """``$OPENUS_MONAI_DEMO_DIR``, else ``~/.cache/openus_monai/demo_data``."""
    return Path(os.environ.get(DEMO_DIR_ENV) or Path.home() / ".cache" / "openus_monai" / "demo_data").expanduser()


def has_dataset(dataset_dir: str | os.PathLike) -> bool:
    """Whether the folder holds ``datalist.json``, ``labels.csv`` or any image file (recursive)."""
    root = Path(dataset_dir)
    if not root.is_dir():
        return False
    if (root / "datalist.json").is_file() or (root / "labels.csv").is_file():
        return True
    for _, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(is_image_file(f) for f in files):
            return True
    return False


def ensure_demo_data(
    dataset_dir: str | os.PathLike | None = None, n: int = 48, seed: int = 0, size: int | Sequence[int] = 256
) -> str:
    """Return a data set folder, generating the synthetic demo data set there when it holds none.

    - ``dataset_dir`` None or ``""``: the demo folder :func:`default_demo_dir` is used.
    - A folder written by :func:`synthesize_dataset` (it has ``synthesis.json``) is brought up to date
      with ``n``, ``seed``, ``size`` (a no-op when they match).
    - A folder holding user data (``datalist.json``, ``labels.csv`` or any image) is returned untouched.
    - Otherwise (missing or empty folder) the demo data set is generated there.

    Typical use, one line before :func:`build_datalist`::

        datalist = build_datalist(ensure_demo_data(dataset_dir), "segmentation")

    Args:
        dataset_dir: data set folder, or None / ``""`` for the default demo folder.
        n: number of demo images.
        seed: demo data seed.
        size: demo image size, int or (H, W).

    Returns:
        the absolute path of the data set folder.
    """
    root = default_demo_dir() if dataset_dir is None or str(dataset_dir).strip() == "" else Path(dataset_dir)
    root = root.expanduser().absolute()
    if (root / MANIFEST).is_file() or not has_dataset(root):
        synthesize_dataset(root, n=n, seed=seed, size=size)
    return str(root)
