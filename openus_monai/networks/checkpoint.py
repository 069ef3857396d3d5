"""Load OpenUS, VMamba and OpenUS-MONAI encoder weights into :class:`VMamba` (``weights_only=True``)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..io import load_weights_only
from .vmamba import VMamba

__all__ = ["LoadReport", "load_openus_checkpoint", "read_state_dict"]

logger = logging.getLogger(__name__)

# Entries that hold a model inside a training checkpoint, in the order they are tried.
_CONTAINER_KEYS = ("teacher", "student", "model", "state_dict", "network", "encoder")
# Prefixes stripped from keys: DDP, the DINO/iBOT wrapper, and this project's model wrappers.
_PREFIXES = ("module.", "backbone.", "encoder.", "_orig_mod.")


@dataclass
class LoadReport:
    """What :func:`load_openus_checkpoint` did.

    Attributes:
        source: where the weights came from, and which entry.
        loaded: encoder keys that were set.
        missing_keys: encoder keys the checkpoint did not provide (left at their current values).
        unexpected_keys: checkpoint keys that are not part of the encoder (dropped: heads, decoders...).
        adapted: keys whose tensors were converted (e.g. a 3-channel stem summed to 1 channel).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        def short(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        lines = [f"loaded {len(self.loaded)} encoder tensors from {self.source}"]
        if self.missing_keys:
            lines.append(f"missing (kept as initialised): {short(self.missing_keys)}")
        if self.unexpected_keys:
            lines.append(f"dropped (not encoder weights): {short(self.unexpected_keys)}")
        if self.adapted:
            lines.append(f"adapted: {short(self.adapted)}")
        return "; ".join(lines)


def read_state_dict(path_or_state: str | os.PathLike | Mapping[str, Any], key: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """Find the encoder state dict in a checkpoint file or object.

    Args:
        path_or_state: a ``.pt``/``.pth`` path, or an already loaded checkpoint / state dict.
        key: the entry to use (e.g. ``"student"``); default the first of ``teacher``, ``student``,
            ``model``, ``state_dict``, ``network``, ``encoder`` present, else the mapping itself.

    Returns:
        ``(state_dict, source)`` with prefixes such as ``module.`` and ``backbone.`` removed.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a weights-only checkpoint, or has no tensors where expected.
    """
    source = "<state dict>"
    if isinstance(path_or_state, (str, os.PathLike)):
        path = Path(path_or_state)
        source = str(path)
        checkpoint = load_weights_only(path)  # FileNotFoundError, or ValueError naming the file
    else:
        checkpoint = path_or_state
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{source}: expected a mapping of tensors, got {type(checkpoint).__name__}")

    if key is not None:
        if key not in checkpoint:
            raise ValueError(f"{source} has no entry {key!r}; entries: {sorted(map(str, checkpoint))[:20]}")
        state, source = checkpoint[key], f"{source}[{key!r}]"
    else:
        found = next((k for k in _CONTAINER_KEYS if isinstance(checkpoint.get(k), Mapping)), None)
        state = checkpoint[found] if found else checkpoint
        source = f"{source}[{found!r}]" if found else source

    tensors = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in _PREFIXES:
            while name.startswith(prefix):
                name = name[len(prefix):]
        tensors[name] = value
    if not tensors:
        raise ValueError(f"{source} holds no tensors")
    return tensors, source


def _adapt_stem(name: str, value: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """Convert the first stem convolution between 3 and 1 input channels (sum, or repeat / 3)."""
    if name != "patch_embed.0.weight" or value.ndim != 4 or value.shape[0] != target.shape[0] or value.shape[2:] != target.shape[2:]:
        return None
    if value.shape[1] == 3 and target.shape[1] == 1:
        return value.sum(1, keepdim=True)
    if value.shape[1] == 1 and target.shape[1] == 3:
        return value.repeat(1, 3, 1, 1) / 3
    return None


def load_openus_checkpoint(
    encoder: VMamba,
    path_or_state: str | os.PathLike | Mapping[str, Any],
    key: str | None = None,
    strict: bool = False,
) -> LoadReport:
    """Load encoder weights from an original OpenUS / VMamba checkpoint or one of this project's.

    Accepted: an OpenUS pretraining checkpoint (``teacher`` or ``student`` entry, keys under
    ``module.backbone.``), a VMamba ImageNet checkpoint (``model`` entry; its classifier is dropped),
    an encoder exported by the pretraining bundle, or any state dict with the encoder's keys. A
    3-channel stem loads into a 1-channel encoder by summing over colour (and back, by repetition / 3).

    Args:
        encoder: the :class:`VMamba` to fill (in place).
        path_or_state: checkpoint path or loaded mapping; files load with ``weights_only=True``.
        key: the entry to read, e.g. ``"student"`` (default: ``teacher`` if present; see :func:`read_state_dict`).
        strict: raise if any encoder key is missing.

    Returns:
        a :class:`LoadReport` listing loaded, missing, dropped and adapted keys (also logged).

    Raises:
        ValueError: a tensor's shape differs from the encoder's (every such key is named), the checkpoint
            is not weights-only, nothing matched, or ``strict`` and keys are missing.
    """
    state, source = read_state_dict(path_or_state, key)
    target = encoder.state_dict()
    report = LoadReport(source)
    to_load, mismatched = {}, []
    for name, value in state.items():
        if name not in target:
            report.unexpected_keys.append(name)
            continue
        if value.shape != target[name].shape:
            adapted = _adapt_stem(name, value, target[name])
            if adapted is None:
                mismatched.append(f"{name}: checkpoint {list(value.shape)} vs encoder {list(target[name].shape)}")
                continue
            value = adapted
            report.adapted.append(f"{name} {list(state[name].shape)} -> {list(value.shape)}")
        to_load[name] = value
    if mismatched:
        raise ValueError(f"{source}: shapes do not match the encoder for {len(mismatched)} keys:\n  " + "\n  ".join(mismatched))
    if not to_load:
        raise ValueError(f"{source}: no key matches the encoder (first keys: {list(state)[:5]}); is this a VMamba/OpenUS checkpoint?")
    report.loaded = sorted(to_load)
    report.missing_keys = sorted(set(target) - set(to_load))
    if strict and report.missing_keys:
        raise ValueError(f"{source}: missing encoder keys {report.missing_keys}")
    encoder.load_state_dict(to_load, strict=False)
    logger.info("%s", report)
    return report
