"""Demo data on demand: the synthetic data set, generated in the cache when the user names no data set.

A folder the user names is never written to and never replaced by phantoms: a wrong one is one clear
error (:class:`DatasetNotFoundError`) naming the folder and what was expected there.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .readers import IMAGE_EXTENSIONS, is_image_file
from .synthetic import synthesize_dataset

__all__ = [
    "DEMO_DIR_ENV",
    "DEMO_NAME",
    "DatasetNotFoundError",
    "check_dataset_dir",
    "default_demo_dir",
    "ensure_demo_data",
    "has_dataset",
    "is_demo_request",
]

#: environment variable overriding the default demo-data folder
DEMO_DIR_ENV = "OPENUS_MONAI_DEMO_DIR"
#: the ``dataset_dir`` value that asks for the demo data set by name
DEMO_NAME = "demo"


class DatasetNotFoundError(FileNotFoundError):
    """A ``dataset_dir`` the user named does not exist or holds no data set (the message says which)."""


def default_demo_dir() -> Path:
    """``$OPENUS_MONAI_DEMO_DIR``, else ``~/.cache/openus_monai/demo_data``."""
    return Path(os.environ.get(DEMO_DIR_ENV) or Path.home() / ".cache" / "openus_monai" / "demo_data").expanduser()


def is_demo_request(dataset_dir: str | os.PathLike | None) -> bool:
    """Whether ``dataset_dir`` asks for the demo data: None, ``""`` or the name ``"demo"``."""
    return dataset_dir is None or str(dataset_dir).strip() in ("", DEMO_NAME)


def has_dataset(dataset_dir: str | os.PathLike) -> bool:
    """Whether the folder holds ``datalist.json``, ``labels.csv`` or any image file (recursive), or is itself a
    ``.json`` datalist file."""
    root = Path(dataset_dir)
    if root.is_file():
        return root.suffix.lower() == ".json"
    if not root.is_dir():
        return False
    if (root / "datalist.json").is_file() or (root / "labels.csv").is_file():
        return True
    for _, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(is_image_file(f) for f in files):
            return True
    return False


def check_dataset_dir(dataset_dir: str | os.PathLike) -> Path:
    """The absolute path of a user-named data set folder, or one clear error saying what is wrong with it.

    Args:
        dataset_dir: the folder the user named.

    Returns:
        the folder, absolute; nothing is written to it.

    Raises:
        DatasetNotFoundError: it does not exist, is not a folder, or holds neither ``datalist.json``,
            ``labels.csv`` nor any image file.
    """
    root = Path(dataset_dir).expanduser().absolute()
    hint = f"(leave dataset_dir empty, or set it to '{DEMO_NAME}', to use the generated demo data instead)"
    if not root.exists():
        raise DatasetNotFoundError(f"dataset_dir {root} does not exist {hint}")
    if not root.is_dir() and not (root.is_file() and root.suffix.lower() == ".json"):
        raise DatasetNotFoundError(f"dataset_dir {root} is neither a folder nor a .json datalist {hint}")
    if not has_dataset(root):
        raise DatasetNotFoundError(
            f"dataset_dir {root} holds no data set: expected datalist.json, labels.csv or image files "
            f"({', '.join(IMAGE_EXTENSIONS)}) in it or below it {hint}"
        )
    return root


def ensure_demo_data(
    dataset_dir: str | os.PathLike | None = None, n: int = 48, seed: int = 0, size: int | Sequence[int] = 256
) -> str:
    """Return the data set folder to read: the user's, checked, or the demo folder, generated on demand.

    - ``dataset_dir`` None, ``""`` or ``"demo"``: the demo folder :func:`default_demo_dir`, where the
      synthetic data set is generated (or brought up to date with ``n``, ``seed``, ``size``; a no-op when
      they match). A local folder literally named ``demo`` must be passed as ``./demo``.
    - any other value: a folder the user named. It is returned as it is when it holds a data set and is
      never written to; otherwise :class:`DatasetNotFoundError` names it and what was expected.

    Typical use, one line before :func:`build_datalist`::

        datalist = build_datalist(ensure_demo_data(dataset_dir), "segmentation")

    Args:
        dataset_dir: data set folder, or None / ``""`` / ``"demo"`` for the demo data set.
        n: number of demo images.
        seed: demo data seed.
        size: demo image size, int or (H, W).

    Returns:
        the absolute path of the data set folder.

    Raises:
        DatasetNotFoundError: a named folder that does not exist or holds no data set.
    """
    if not is_demo_request(dataset_dir):
        return str(check_dataset_dir(dataset_dir))  # type: ignore[arg-type]
    root = default_demo_dir().absolute()
    synthesize_dataset(root, n=n, seed=seed, size=size)
    return str(root)
