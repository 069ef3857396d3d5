"""Extract the pretrained encoder of a pretraining checkpoint as a self-describing encoder file."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..io import atomic_torch_save, load_weights_only
from .checkpoint import read_state_dict
from .record import encoder_record, plain_data

__all__ = ["ENCODER_CONFIG_KEY", "ENCODER_ROOTS", "EncoderEntry", "encoder_state_dict", "export_backbone"]

logger = logging.getLogger(__name__)

ENCODER_ROOTS = ("patch_embed.", "layers.", "outnorm", "masked_embed")
#: the pretraining checkpoint entry that says which encoder the method exports (an :class:`EncoderEntry`)
ENCODER_CONFIG_KEY = "encoder_config"


class EncoderEntry:
    """A pretraining checkpoint entry naming the method's exported encoder: its record (``_target_``, ``args``),
    its key prefix in the method's state dict and ``meta``, so ``export-backbone`` can write a self-describing
    file from the checkpoint alone. ``CheckpointSaver(save_dict={..., "encoder_config": EncoderEntry(method, meta)})``.

    Args:
        method: the pretraining method (its ``export_encoder`` is a submodule of it).
        meta: plain data, as :class:`~openus_monai.handlers.BackboneExportHandler`'s.
    """

    def __init__(self, method: nn.Module, meta: Mapping[str, Any] | None = None) -> None:
        self.method, self.meta = method, dict(meta or {})

    def state_dict(self) -> dict[str, Any]:
        encoder = self.method.export_encoder
        prefix = next(name for name, module in self.method.named_modules() if module is encoder)
        return {**encoder_record(encoder), "prefix": f"{prefix}.", "meta": plain_data(self.meta)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore: the entry describes the method it was built from."""


def encoder_state_dict(checkpoint: str | os.PathLike | Mapping, key: str | None = None) -> dict[str, torch.Tensor]:
    """The exported encoder's tensors from an OpenUS-MONAI pretraining checkpoint (``network`` entry, under the
    prefix its ``encoder_config`` names, else ``teacher.encoder.``), an original OpenUS checkpoint (``teacher``
    entry, ``backbone.*``) or a state dict.

    Args:
        checkpoint: path (loaded with ``weights_only=True``) or mapping.
        key: entry to read (default: ``network`` for this project's checkpoints, else as :func:`read_state_dict`).
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = load_weights_only(checkpoint)  # refuses pickled code, naming the file
    if key is None and isinstance(checkpoint.get("network"), Mapping):
        entry = checkpoint.get(ENCODER_CONFIG_KEY)
        prefix = entry["prefix"] if isinstance(entry, Mapping) else "teacher.encoder."
        state = {k.removeprefix(prefix): v for k, v in checkpoint["network"].items() if k.startswith(prefix)}
        if isinstance(entry, Mapping) and state:
            return state
    else:
        state, _ = read_state_dict(checkpoint, key)
    encoder = {k: v for k, v in state.items() if k.startswith(ENCODER_ROOTS)}
    if not encoder:
        raise ValueError("no encoder weights found (expected keys under teacher.encoder., backbone. or patch_embed./layers.)")
    return encoder


def export_backbone(
    checkpoint: str | os.PathLike | Mapping,
    out: str | os.PathLike,
    key: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write the encoder of ``checkpoint`` to ``out`` atomically: a self-describing encoder file (as the pretraining
    bundle's ``backbone.pt``) when the checkpoint has an ``encoder_config`` entry, else (older or foreign
    checkpoints) the plain state dict, which :func:`load_openus_checkpoint` reads into a VMamba built from a config.

    Args:
        checkpoint: the pretraining checkpoint (path, loaded with ``weights_only=True``, or mapping).
        out: the file to write.
        key: entry to read, e.g. ``student`` (default: the exported encoder, the teacher's).
        meta: plain data added to the file's ``meta`` (provenance: corpus, epochs, commit...); it needs a
            self-describing checkpoint (a plain state dict has nowhere to keep it).

    Raises:
        ValueError: ``meta`` given for a checkpoint that does not record its encoder.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = load_weights_only(checkpoint)
    state = encoder_state_dict(checkpoint, key)
    entry = checkpoint.get(ENCODER_CONFIG_KEY) if key is None else None
    if not isinstance(entry, Mapping):
        if meta:
            raise ValueError(f"the checkpoint does not record its encoder (no {ENCODER_CONFIG_KEY!r} entry): a plain state dict cannot carry meta")
        logger.warning("the checkpoint does not record its encoder (no %r entry): writing a plain state dict", ENCODER_CONFIG_KEY)
        return atomic_torch_save(state, out)
    content = {
        "state_dict": state,
        "network_config": {"_target_": entry["_target_"], "args": dict(entry["args"])},
        "meta": {**dict(entry.get("meta") or {}), **plain_data(dict(meta or {}))},
    }
    return atomic_torch_save(content, out)
