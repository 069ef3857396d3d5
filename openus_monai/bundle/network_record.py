"""Checkpoints that say which network they hold, so evaluation and inference need not repeat the training's configs.

Training saves, next to the weights, a :class:`NetworkRecord` entry (``network_config``): the network's class
and constructor arguments as plain data (it loads with ``weights_only=True``). Evaluation and inference
build their network from the config as usual (``network_def`` stays buildable from the config alone, as the
model zoo needs), then :func:`network_for_checkpoint` rebuilds it as the checkpoint records when the two
differ, and logs that it did: a model trained with ``configs/tiny.json`` evaluates with ``train.json`` +
``evaluate.json`` alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from openus_monai.io import load_weights_only
from openus_monai.networks.record import build_from_record, plain_data

__all__ = ["RECORD_KEY", "NetworkRecord", "network_for_checkpoint", "read_network_record"]

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


def network_for_checkpoint(network: torch.nn.Module, config: NetworkRecord, checkpoint: str | os.PathLike) -> torch.nn.Module:
    """``network`` (built from the config), or a network built as ``checkpoint`` records when that differs.

    Args:
        network: the network the configs build.
        config: its record (the configs' class and arguments).
        checkpoint: the checkpoint evaluation or inference will load.

    Returns:
        ``network``, or the recorded network (a log line says what differed).
    """
    recorded = read_network_record(checkpoint)
    if recorded is None or recorded == config:
        return network
    changed = sorted(k for k in set(recorded.args) | set(config.args) if recorded.args.get(k) != config.args.get(k))
    if recorded.target != config.target:
        changed.insert(0, "_target_")
    logger.info(
        "%s was trained with another network than these configs build (%s); building it as the checkpoint records: %s",
        checkpoint, ", ".join(f"{k}: {config.args.get(k)!r} -> {recorded.args.get(k)!r}" for k in changed), recorded,
    )
    return recorded.build()
