"""Atomic, weights-only file writing and reading."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["TEMP_SUFFIX", "atomic_torch_save", "atomic_write_json", "load_weights_only"]

# Temporary files of :func:`atomic_torch_save` are ``.<name>.<random>.tmp`` beside the target.
TEMP_SUFFIX = ".tmp"


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, flushed and fsynced, then renamed over it.

    A reader never sees a partial file: after a crash there is either the old file or the new one,
    plus possibly a ``.<name>.*.tmp`` leftover, which readers ignore (see
    :func:`openus_monai.bundle.checkpoints.clean_partial_writes`).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (POSIX; a no-op where directories cannot be opened)
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def atomic_write_json(data: Any, path: str | os.PathLike, indent: int = 1) -> Path:
    """Write ``data`` as JSON to a temporary file beside ``path``, then rename it over ``path``."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=indent)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_weights_only(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file.

    Args:
        path: a file written by ``torch.save``.
        map_location: as :func:`torch.load`.

    Returns:
        the loaded object (tensors, containers of tensors and plain Python values only).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds pickled Python objects (refused: unpickling them could run code; nothing in
            the file was executed), or it is truncated / not a PyTorch file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if "Unsupported" in line or "WeightsUnpickler" in line]
        detail = lines[0].split(" Please use")[0] if lines else repr(err)
        raise ValueError(
            f"{path} cannot be loaded with weights_only=True: it holds pickled Python objects, which could run "
            f"code when loaded, so it is refused (nothing in it was executed). Load only files you trust; re-save "
            f"tensors only (torch.save(state_dict, ...)). Detail: {detail}"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {err}") from err
