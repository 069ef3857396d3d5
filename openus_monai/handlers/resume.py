"""Handlers that make a resumed run repeat the uninterrupted one.

:class:`EpochSeedHandler` re-seeds every random source of an epoch (torch, numpy, ``random``, the sampler
and the data transforms) from ``seed + epoch`` when the epoch starts, so an epoch after a resume draws the
same data order, augmentations and dropout as in the uninterrupted run. Checkpoints written at epoch ends
resume exactly with it alone; for checkpoints written in the middle of an epoch (``epoch_level: false``),
:class:`MidEpochResumeHandler` also replays the part of the epoch that was already done.
:class:`BestMetricState` and :class:`EarlyStopState` put the best-model and early-stopping bookkeeping into
the checkpoint. Finding the checkpoint to resume from is :func:`openus_monai.io.latest_checkpoint`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

__all__ = ["BestMetricState", "EarlyStopState", "EpochSeedHandler", "MidEpochResumeHandler"]

logger = logging.getLogger(__name__)


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
    re-seeded at ``EPOCH_STARTED`` (:class:`EpochSeedHandler`)
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
