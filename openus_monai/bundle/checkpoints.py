"""Resumable training checkpoints for the bundles: find the newest complete one, and make a resumed run repeat
the uninterrupted one.

MONAI's ``CheckpointSaver`` writes with Ignite's ``DiskSaver(atomic=False)``, so a process killed while
saving leaves a truncated file under its final name. :func:`latest_checkpoint` therefore loads every
candidate (``weights_only=True``) before choosing it, falls back to the previous one when it does not load,
logs which file was rejected and why, and moves a rejected file aside (``<name>.rejected``) so that later
runs do not trip over it. Temporary files of :func:`openus_monai.io.atomic_torch_save` left by a kill are
deleted (:func:`clean_partial_writes`).

:class:`EpochSeedHandler` re-seeds every random source of an epoch (torch, numpy, ``random``, the sampler
and the data transforms) from ``seed + epoch`` when the epoch starts, so an epoch after a resume draws the
same data order, augmentations and dropout as in the uninterrupted run. Checkpoints written at epoch ends
resume exactly with it alone; for checkpoints written in the middle of an epoch (``epoch_level: false``),
:class:`MidEpochResumeHandler` also replays the part of the epoch that was already done.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from ..io import TEMP_SUFFIX, load_weights_only

__all__ = [
    "BestMetricState",
    "EarlyStopState",
    "EpochSeedHandler",
    "MidEpochResumeHandler",
    "checkpoint_candidates",
    "clean_partial_writes",
    "latest_checkpoint",
    "verify_checkpoint",
]

logger = logging.getLogger(__name__)

_STEP = re.compile(r"(\d+)")
# Files in a ckpt_dir that are exports or best models, never resumable checkpoints.
EXPORTS = ("backbone.pt", "model.pt")
REJECTED_SUFFIX = ".rejected"
# (path, size, mtime_ns) -> None when the file verified, else the reason; avoids loading a file twice when a
# config calls latest_checkpoint() for both ``_disabled_`` and ``load_path``.
_verified: dict[tuple[str, int, int], str | None] = {}


def clean_partial_writes(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` leftovers of :func:`~openus_monai.io.atomic_torch_save` in ``ckpt_dir``.

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


class EpochSeedHandler:
    """Re-seed everything random in an epoch from ``seed + epoch`` on ``EPOCH_STARTED``.

    Seeds torch (dropout, drop-path, a ``RandomSampler`` without its own generator), numpy and ``random``;
    the sampler's own generator (``WeightedRandomSampler(generator=...)``) and ``set_epoch`` of a
    ``DistributedSampler``; and the dataset's transform (``Compose.set_random_state``). An epoch is then a
    function of ``(seed, epoch)`` alone, which is what makes a run resumed at an epoch boundary repeat the
    uninterrupted one (with ``num_workers=0``, or workers seeded from torch as MONAI's ``DataLoader`` does).
    Attach it to the trainer before ``run()``; it runs before the epoch's data iterator is created.

    Args:
        seed: base seed (the bundle's ``seed``).
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        seed = (self.seed + epoch) % (2**32)
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        loader = engine.state.dataloader
        for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            generator = getattr(sampler, "generator", None)
            if isinstance(generator, torch.Generator):
                generator.manual_seed(seed)
        transform = getattr(getattr(loader, "dataset", None), "transform", None)
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=seed)


class BestMetricState:
    """The best-so-far tracking of a key-metric ``CheckpointSaver`` (``save_key_metric=True``) as a checkpoint
    entry, so that a resumed run replaces ``model.pt`` exactly when the uninterrupted run would.

    Args:
        handlers: the saver, or a list of handlers holding it (e.g. ``@validate#handlers``).
    """

    def __init__(self, handlers: Any) -> None:
        candidates = handlers if isinstance(handlers, (list, tuple)) else [handlers]
        found = [h for h in candidates if getattr(h, "_key_metric_checkpoint", None) is not None]
        if not found:
            raise ValueError("BestMetricState: no CheckpointSaver with save_key_metric=True among the handlers")
        self.saver = found[0]

    def state_dict(self) -> dict[str, Any]:
        saved = self.saver._key_metric_checkpoint._saved
        return {"_saved": [(float(item.priority), str(item.filename)) for item in saved]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.saver.load_state_dict(state)


class EarlyStopState:
    """The counter and best score of a MONAI ``EarlyStopHandler`` as a checkpoint entry.

    Args:
        handler: the ``EarlyStopHandler`` (constructed with its ``trainer``).
    """

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    def state_dict(self) -> dict[str, Any]:
        inner = self.handler._handler
        if inner is None:
            return {}
        best = inner.best_score
        return {"counter": int(inner.counter), "best_score": None if best is None else float(best)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        inner = self.handler._handler
        if inner is not None and state:
            inner.counter, inner.best_score = int(state["counter"]), state["best_score"]


class _SkipFirstBatches:
    """A data loader whose next iterator drops its first ``skip`` batches (then it is the plain loader again)."""

    def __init__(self, loader: Any, skip: int) -> None:
        self.loader, self.skip = loader, int(skip)

    def __iter__(self):
        iterator = iter(self.loader)
        skip, self.skip = self.skip, 0
        for _ in range(skip):  # loaded and dropped, so random transforms advance as in the uninterrupted run
            next(iterator)
        return iterator

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:  # sampler, dataset, batch_size... of the wrapped loader
        return getattr(self.loader, name)


class MidEpochResumeHandler:
    """Make a run resumed from a checkpoint taken in the middle of an epoch see the rest of that epoch's batches.

    Ignite resumes at iteration ``i`` by starting a new data iterator and counting from ``i % epoch_length``,
    so the resumed epoch would get the epoch's FIRST batches again. On ``STARTED`` (attach it after the
    ``CheckpointLoader``), this handler makes the first iterator skip the ``i % epoch_length`` batches that
    were already trained on (loading and dropping them, like Ignite's ``DeterministicEngine``); with the epoch
    re-seeded at ``EPOCH_STARTED`` (:class:`EpochSeedHandler`, or ``OpenUSPretrainer(deterministic_seed=...)``)
    the resumed epoch then repeats the uninterrupted one. Nothing happens at epoch boundaries or fresh starts.
    """

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        length = engine.state.epoch_length
        done = engine.state.iteration % length if length else 0
        loader = engine.state.dataloader
        if isinstance(loader, _SkipFirstBatches):
            loader.skip = done
        elif done:
            engine.state.dataloader = _SkipFirstBatches(loader, done)
            logger.info("resuming inside epoch %d: skipping its first %d batches", engine.state.epoch + 1, done)
