"""Epoch means of per-iteration outputs (loss terms, learning rate) as Ignite metrics."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from ignite.engine import Engine
from ignite.metrics import Average

__all__ = ["EpochAverageHandler"]


def _first_item(output: Any) -> Any:
    """MONAI's decollated convention: the iteration output is a list of per-sample dicts; the first carries the
    batch-level values (``loss``, ...)."""
    return output[0] if isinstance(output, (list, tuple)) else output


def _pick(output: Any, key: str, transform: Callable[[Any], Any]) -> float:
    value = transform(output).get(key, math.nan)  # a skipped (non-finite) step lacks the loss terms
    return float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else float(value)


class EpochAverageHandler:
    """Put the epoch mean of chosen iteration outputs into ``engine.state.metrics`` as ``f"{prefix}{key}"``.

    One :class:`ignite.metrics.Average` per key: reset at ``EPOCH_STARTED``, updated at every
    ``ITERATION_COMPLETED``, computed at ``EPOCH_COMPLETED`` (averaged over ranks under
    ``torch.distributed``, so attach it on every rank). Epoch-level loggers (MONAI's ``StatsHandler``,
    ``TensorBoardStatsHandler``, ``MLFlowHandler``) then record the means, provided they were attached after
    this handler (list it first in ``train#handlers``). A step whose output lacks a key (the pretrainer's
    skipped non-finite step) counts as NaN, so the epoch mean shows it.

    Args:
        keys: names in the iteration output dict, e.g. ``["loss", "loss_cls", "lr"]``.
        prefix: prefix of the metric names (``"epoch_"`` gives ``epoch_loss``).
        output_transform: maps ``engine.state.output`` to a dict of scalars (floats or 0-dim tensors);
            the default takes the first item of a decollated list.
    """

    def __init__(self, keys: Sequence[str], prefix: str = "epoch_", output_transform: Callable[[Any], Any] = _first_item) -> None:
        if isinstance(keys, str) or not keys:
            raise ValueError(f"keys must be a non-empty list of output names, got {keys!r}")
        self.keys, self.prefix, self.output_transform = list(keys), prefix, output_transform

    @property
    def names(self) -> list[str]:
        """The metric names this handler writes."""
        return [f"{self.prefix}{k}" for k in self.keys]

    def attach(self, engine: Engine) -> None:
        for key, name in zip(self.keys, self.names):
            Average(output_transform=partial(_pick, key=key, transform=self.output_transform)).attach(engine, name)
