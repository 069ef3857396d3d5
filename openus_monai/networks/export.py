"""Extract the teacher encoder of a pretraining checkpoint as a plain state dict."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..io import atomic_torch_save, load_weights_only
from .checkpoint import read_state_dict

__all__ = ["ENCODER_ROOTS", "encoder_state_dict", "export_backbone"]

ENCODER_ROOTS = ("patch_embed.", "layers.", "outnorm", "masked_embed")


def encoder_state_dict(checkpoint: str | os.PathLike | Mapping, key: str | None = None) -> dict[str, torch.Tensor]:
    """The teacher encoder's tensors from an OpenUS-MONAI pretraining checkpoint (``network`` entry, keys
    ``teacher.encoder.*``), an original OpenUS checkpoint (``teacher`` entry, ``backbone.*``) or a state dict.

    Args:
        checkpoint: path (loaded with ``weights_only=True``) or mapping.
        key: entry to read (default: ``network`` for this project's checkpoints, else as :func:`read_state_dict`).
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = load_weights_only(checkpoint)  # refuses pickled code, naming the file
    if key is None and isinstance(checkpoint.get("network"), Mapping):
        state = {k.removeprefix("teacher.encoder."): v for k, v in checkpoint["network"].items() if k.startswith("teacher.encoder.")}
    else:
        state, _ = read_state_dict(checkpoint, key)
    encoder = {k: v for k, v in state.items() if k.startswith(ENCODER_ROOTS)}
    if not encoder:
        raise ValueError("no encoder weights found (expected keys under teacher.encoder., backbone. or patch_embed./layers.)")
    return encoder


def export_backbone(checkpoint: str | os.PathLike | Mapping, out: str | os.PathLike, key: str | None = None) -> Path:
    """Write :func:`encoder_state_dict` of ``checkpoint`` to ``out`` atomically; loads with :func:`load_openus_checkpoint`."""
    return atomic_torch_save(encoder_state_dict(checkpoint, key), out)
