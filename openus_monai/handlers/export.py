"""Write the pretrained encoder, self-describing, at the end of pretraining."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch.nn as nn
from ignite import distributed as idist
from ignite.engine import Engine, Events

from ..io import atomic_torch_save
from ..networks.record import encoder_file

__all__ = ["BackboneExportHandler"]

logger = logging.getLogger(__name__)


class BackboneExportHandler:
    """On ``COMPLETED`` (rank 0 only), write ``encoder`` atomically to ``path`` as a self-describing encoder file
    (:func:`~openus_monai.networks.record.encoder_file`: ``state_dict``, ``network_config``, ``meta``).

    Args:
        encoder: the method's ``export_encoder``.
        path: the file (``backbone.pt``).
        meta: plain data saved with it, e.g. ``{"method": "usf_mae", "image_size": 224}``.
    """

    def __init__(self, encoder: nn.Module, path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> None:
        self.encoder, self.path, self.meta = encoder, path, dict(meta or {})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if idist.get_rank() == 0:
            atomic_torch_save(encoder_file(self.encoder, self.meta), self.path)
            logger.info("encoder (%s) written to %s", type(self.encoder).__name__, self.path)
