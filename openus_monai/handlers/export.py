"""Write the teacher encoder at the end of pretraining."""

from __future__ import annotations

import logging
import os

import torch.nn as nn
from ignite import distributed as idist
from ignite.engine import Engine, Events

from ..io import atomic_torch_save

__all__ = ["BackboneExportHandler"]

logger = logging.getLogger(__name__)


class BackboneExportHandler:
    """On ``COMPLETED`` (rank 0 only), save ``encoder.state_dict()`` atomically to ``path``."""

    def __init__(self, encoder: nn.Module, path: str | os.PathLike) -> None:
        self.encoder, self.path = encoder, path

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if idist.get_rank() == 0:
            atomic_torch_save({k: v.detach().cpu() for k, v in self.encoder.state_dict().items()}, self.path)
            logger.info("teacher encoder written to %s", self.path)
