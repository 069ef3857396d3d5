"""Checkpoints that say which network they hold, so evaluation, inference and serving need not repeat the training's configs.

Training saves, next to the weights, a :class:`NetworkRecord` entry (``network_config``): the network's class
and constructor arguments as plain data (it loads with ``weights_only=True``). The ``network_def`` of the
bundles' ``inference.json`` and ``evaluate.json`` is :func:`recorded_network`: the network that
``models/model.pt`` records when it records one, else the one the configs describe (no checkpoint yet: the model
zoo's config-only check). Whatever reads ``network_def`` (the bundles' own runs, MONAI Label's ``monaibundle``
app, ``monai.bundle ckpt_export``) gets the trained architecture: a model trained with ``configs/tiny.json``
evaluates, infers and is served with the bundle's configs alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from monai.utils import instantiate

from openus_monai.io import load_weights_only
from openus_monai.networks.record import build_from_record, plain_data

__all__ = ["RECORD_KEY", "NetworkRecord", "read_network_record", "recorded_network"]

logger = logging.getLogger(__name__)

#: the checkpoint entry holding the record
RECORD_KEY = "network_config"
_WEIGHT_ONLY_ARGS = ("pretrained", "checkpoint_key", "freeze_encoder", "init")  # how weights are initialised, not the shape


class NetworkRecord:
    """The network's class and constructor arguments as a checkpoint entry.

    ``CheckpointSaver(save_dict={"model": net, "network_config": NetworkRecord(target, args)})``; its
    ``state_dict()`` is plain data (``{"_target_": str, "args": dict}``).

    Args:
        target: the network class, as a config ``_target_`` (e.g. ``"openus_monai.networks.OpenUSSegNet"``).
        args: constructor arguments that fix the architecture (plain data).
    """

    def __init__(self, target: str, args: Mapping[str, Any]) -> None:
        self.target = str(target)
        self.args = {k: v for k, v in plain_data(dict(args)).items() if k not in _WEIGHT_ONLY_ARGS}

    def state_dict(self) -> dict[str, Any]:
        return {"_target_": self.target, "args": dict(self.args)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.target, self.args = str(state["_target_"]), dict(state["args"])

    def build(self) -> torch.nn.Module:
        """A new network as recorded."""
        return build_from_record(self.state_dict())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NetworkRecord) and self.state_dict() == other.state_dict()

    def __repr__(self) -> str:
        return f"NetworkRecord({self.target}, {self.args})"


def read_network_record(checkpoint: str | os.PathLike) -> NetworkRecord | None:
    """The record in a checkpoint file, or None (no file, or a checkpoint written before records existed)."""
    path = Path(checkpoint)
    if not path.is_file():
        return None
    state = load_weights_only(path)
    entry = state.get(RECORD_KEY) if isinstance(state, Mapping) else None
    if not isinstance(entry, Mapping) or "_target_" not in entry:
        return None
    record = NetworkRecord("", {})
    record.load_state_dict(entry)
    return record


def recorded_network(checkpoint: str | os.PathLike, target: str, **args: Any) -> torch.nn.Module:
    """The network ``checkpoint`` records, or ``target(**args)`` when there is no such file or it records none.

    A bundle's ``network_def``: ``{"_target_": "openus_monai.bundle.network_record.recorded_network",
    "checkpoint": "$@ckpt_dir + '/model.pt'", "target": "openus_monai.networks.OpenUSSegNet", "encoder": ...}``.
    The configs' network options (``args``) apply only when the checkpoint records nothing; a log line says
    which network was built from the checkpoint.

    Args:
        checkpoint: the checkpoint that evaluation or inference will load (e.g. ``models/model.pt``).
        target: the network class the configs name (a config ``_target_``).
        args: its constructor arguments from the configs.

    Returns:
        A new network (random weights; the checkpoint's weights are loaded by the caller).
    """
    recorded = read_network_record(checkpoint)
    if recorded is None:
        return instantiate(target, "default", **args)
    logger.info("building the network that %s records (the configs' network options are not used): %s", checkpoint, recorded)
    return recorded.build()
