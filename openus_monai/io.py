"""Atomic, weights-only file writing and reading, and finding the newest complete training checkpoint.

MONAI's ``CheckpointSaver`` writes with Ignite's ``DiskSaver(atomic=False)``, so a process killed while
saving leaves a truncated file under its final name. :func:`latest_checkpoint` therefore loads every
candidate (``weights_only=True``) before choosing it, falls back to the previous one when it does not load,
logs which file was rejected and why, and moves a rejected file aside (``<name>.rejected``) so that later
runs do not trip over it. Temporary files of :func:`atomic_torch_save` left by a kill are deleted
(:func:`clean_partial_writes`).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "TEMP_SUFFIX",
    "atomic_path",
    "atomic_torch_save",
    "atomic_write_json",
    "checkpoint_candidates",
    "clean_partial_writes",
    "latest_checkpoint",
    "load_weights_only",
    "verify_checkpoint",
]

logger = logging.getLogger(__name__)

# Temporary files of :func:`atomic_torch_save` are ``.<name>.<random>.tmp`` beside the target.
TEMP_SUFFIX = ".tmp"
_STEP = re.compile(r"(\d+)")
# Files in a ckpt_dir that are exports or best models, never resumable checkpoints.
EXPORTS = ("backbone.pt", "model.pt")
REJECTED_SUFFIX = ".rejected"
# (path, size, mtime_ns) -> None when the file verified, else the reason; avoids loading a file twice when a
# config calls latest_checkpoint() for both ``_disabled_`` and ``load_path``.
_verified: dict[tuple[str, int, int], str | None] = {}


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, flushed and fsynced, then renamed over it.

    A reader never sees a partial file: after a crash there is either the old file or the new one,
    plus possibly a ``.<name>.*.tmp`` leftover, which readers ignore (see
    :func:`clean_partial_writes`).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # the usual permissions (mkstemp's 0600 is not)
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
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


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block succeeds, removed when
    it fails, so a reader never sees a partial file (folders are created)::

        with atomic_path("out/mask.png") as tmp:
            image.save(tmp, format="PNG")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name, not mkstemp's file: the writer creates it with the usual permissions (mkstemp's are 0600)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(data: Any, path: str | os.PathLike, indent: int = 1) -> Path:
    """Write ``data`` as JSON to a temporary file beside ``path``, then rename it over ``path``."""
    import json

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=indent), encoding="utf-8")
    return Path(path)


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


def clean_partial_writes(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` leftovers of :func:`atomic_torch_save` in ``ckpt_dir``.

    Call it only when no process is writing there (e.g. when a run starts).

    Returns:
        the deleted paths.
    """
    folder = Path(ckpt_dir)
    removed = []
    for tmp in folder.glob(f".*{TEMP_SUFFIX}") if folder.is_dir() else ():
        try:
            tmp.unlink()
        except OSError:  # another rank removed it first
            continue
        logger.warning("removed %s: a partial write of an interrupted save", tmp)
        removed.append(tmp)
    return removed


def checkpoint_candidates(ckpt_dir: str | os.PathLike, prefix: str | None = None, exclude: Iterable[str] = EXPORTS) -> list[Path]:
    """Training checkpoints in ``ckpt_dir``, newest first: a ``*final*`` file, then by the last number in the
    name (``pretrain_checkpoint_iteration=16.pt``, ``seg_checkpoint_epoch=3.pt``), then by modification time.

    Args:
        ckpt_dir: the folder.
        prefix: only names starting with it (e.g. ``"seg"``); default any ``*.pt``.
        exclude: names that are never training checkpoints (exported encoder, best model).
    """
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return []
    exclude = set(exclude)
    files = [
        p for p in folder.glob(f"{prefix or ''}*.pt")
        if p.is_file() and p.name not in exclude and not p.name.startswith(".")
    ]

    def rank(p: Path) -> tuple[int, int, int]:
        steps = [int(s) for s in _STEP.findall(p.stem)]
        return (1 if "final" in p.stem else 0, steps[-1] if steps else -1, p.stat().st_mtime_ns)

    return sorted(files, key=rank, reverse=True)


def verify_checkpoint(path: str | os.PathLike, required_keys: Sequence[str] = ("trainer",)) -> str | None:
    """Why ``path`` is not a usable training checkpoint, or None if it is.

    It must load with ``torch.load(..., weights_only=True)`` (so it is complete and holds no pickled code)
    and be a mapping with ``required_keys``.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as err:
        return f"cannot be read: {err}"
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return _verified[key]
    try:
        checkpoint = load_weights_only(path)
    except (ValueError, FileNotFoundError) as err:
        reason: str | None = str(err)
    else:
        missing = [k for k in required_keys if not isinstance(checkpoint, Mapping) or k not in checkpoint]
        reason = f"{path} has no {missing} entries; not a training checkpoint" if missing else None
    _verified[key] = reason
    return reason


def latest_checkpoint(
    ckpt_dir: str | os.PathLike,
    prefix: str | None = None,
    exclude: Iterable[str] = EXPORTS,
    required_keys: Sequence[str] = ("trainer",),
    set_aside: bool = True,
) -> str | None:
    """The newest complete training checkpoint in ``ckpt_dir``, or None.

    Candidates (:func:`checkpoint_candidates`) are tried newest first; each must pass
    :func:`verify_checkpoint` (loads with ``weights_only=True``, has ``required_keys``). A candidate that
    fails is logged with the reason and, with ``set_aside``, renamed to ``<name>.rejected`` (kept for
    inspection, no longer a candidate); the next older one is tried. Leftover temporary files of atomic
    writes are deleted first.

    Args:
        ckpt_dir: folder of the run's checkpoints (the bundle's ``ckpt_dir``).
        prefix: only files whose name starts with it (e.g. ``"seg"``); default every ``*.pt``.
        exclude: file names that are never resumable checkpoints.
        required_keys: entries a resumable checkpoint must have.
        set_aside: rename rejected files (off: leave them, only skip them).

    Returns:
        the path as a string (what ``CheckpointLoader(load_path=...)`` takes), or None when there is none.
    """
    clean_partial_writes(ckpt_dir)
    for path in checkpoint_candidates(ckpt_dir, prefix, exclude):
        reason = verify_checkpoint(path, required_keys)
        if reason is None:
            return str(path)
        logger.warning("rejected checkpoint %s: %s", path, reason)
        if set_aside:
            try:
                os.replace(path, path.with_name(path.name + REJECTED_SUFFIX))
                logger.warning("moved %s aside to %s", path, path.name + REJECTED_SUFFIX)
            except OSError:  # already moved by another rank
                pass
    return None
