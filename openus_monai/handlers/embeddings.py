"""EmbeddingWriter: collect what a feature-extraction evaluator computes and save it as one file per run."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from ..io import atomic_torch_save

__all__ = ["EmbeddingWriter"]

logger = logging.getLogger(__name__)


class EmbeddingWriter:
    """Save the evaluator's predictions with the images' file names to ``output_dir/filename`` (``torch.save``,
    loads with ``weights_only=True``): ``{"images": [path], "embedding": [N, C], "map0".."map3": [N, C_i, h_i, w_i]}``
    (maps when the inferer returns them, see :class:`~openus_monai.networks.FeatureInferer`), rows in the data
    order. The evaluator must run with ``decollate=False`` (whole batches in ``engine.state.output``).

    Args:
        output_dir: folder of the file (created).
        filename: the file's name.
        name_key: batch key holding each image's path (a list of strings after collation).
        pred_key: output key holding the prediction (a tensor, or a dict of tensors).
    """

    def __init__(self, output_dir: str | os.PathLike, filename: str = "embeddings.pt", name_key: str = "path",
                 pred_key: str = "pred") -> None:
        self.path = Path(output_dir) / filename
        self.name_key, self.pred_key = name_key, pred_key
        self.names: list[str] = []
        self.parts: dict[str, list[torch.Tensor]] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self.names, self.parts = [], {}

    def collect(self, engine: Engine) -> None:
        pred = engine.state.output[self.pred_key]
        if not isinstance(pred, Mapping):
            pred = {"embedding": pred}
        names = list(engine.state.batch[self.name_key])
        for key, value in pred.items():
            if value.shape[0] != len(names):
                raise ValueError(f"{key}: {value.shape[0]} rows for {len(names)} images; run the evaluator with decollate=False")
            self.parts.setdefault(key, []).append(value.detach().float().cpu().as_subclass(torch.Tensor))
        self.names.extend(str(n) for n in names)

    def write(self, engine: Engine | None = None) -> Path:
        record = {"images": list(self.names), **{k: torch.cat(v) for k, v in self.parts.items()}}
        atomic_torch_save(record, self.path)
        logger.info("%d embeddings %s written to %s", len(self.names),
                    ", ".join(f"{k} {list(v.shape[1:])}" for k, v in record.items() if k != "images"), self.path)
        return self.path
