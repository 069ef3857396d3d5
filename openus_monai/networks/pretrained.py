"""Encoders from a checkpoint alone: read which encoder a file holds, build it, and load it (or not).

Five kinds of file tell their encoder:

- a self-describing encoder file (the pretraining bundle's ``backbone.pt``, ``export-backbone``):
  ``{"state_dict", "network_config": {"_target_", "args"}, "meta"}``: the record is used as written;
- a segmentation / classification ``model.pt`` (``model`` entry and a ``network_config`` record of the whole
  network): the encoder is the network's ``encoder.*`` tensors;
- a pretraining checkpoint of this project with an ``encoder_config`` entry (``_target_``, ``args``, ``prefix``):
  the record as written;
- a pretraining checkpoint of this project (``network`` entry, ``teacher.encoder.*``), an original OpenUS
  checkpoint (``teacher`` / ``student`` state dicts, ``module.backbone.*``) or a plain encoder state dict:
  the VMamba architecture (depths, dims, channels, SSM sizes) is read from the key names and tensor shapes.

``init="random"`` builds the same architecture and leaves the random initialisation: the control arm of a
comparison with the pretrained weights.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
from monai.utils import instantiate

from ..io import load_weights_only
from .checkpoint import load_openus_checkpoint
from .export import encoder_state_dict
from .record import build_from_record, encoder_record
from .vmamba import VMamba

__all__ = [
    "INITS",
    "VMAMBA_TARGET",
    "build_pretrained_encoder",
    "encoder_config",
    "encoder_config_from_checkpoint",
    "infer_vmamba_config",
    "read_encoder_checkpoint",
]

logger = logging.getLogger(__name__)

#: the values of the ``init`` option: load the checkpoint's weights, or keep its architecture only
INITS: tuple[str, ...] = ("pretrained", "random")
VMAMBA_TARGET = "openus_monai.networks.VMamba"
_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.")
_PREFIXES = ("module.", "backbone.", "_orig_mod.")


def infer_vmamba_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The :class:`VMamba` arguments that give a state dict's keys and shapes.

    Args:
        state: encoder tensors with VMamba key names (``patch_embed.0.weight``, ``layers.{i}.blocks.{j}.*``...).

    Returns:
        ``{"depths", "dims", "in_channels", "d_state", "ssm_ratio", "dt_rank", "mlp_ratio"}``.

    Raises:
        ValueError: the keys are not a VMamba encoder's (the first keys are named).
    """
    blocks: dict[int, set[int]] = {}
    for name in state:
        match = _BLOCK.match(name)
        if match:
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    if not blocks or "patch_embed.0.weight" not in state or sorted(blocks) != list(range(len(blocks))):
        raise ValueError(f"not a VMamba encoder state dict (first keys: {list(state)[:5]})")
    depths = [len(blocks[i]) for i in range(len(blocks))]
    dims = [int(state[f"layers.{i}.blocks.0.norm.weight"].shape[0]) for i in range(len(depths))]
    first = "layers.0.blocks.0."
    d_inner = int(state[first + "op.in_proj.weight"].shape[0])
    ranks = [int(state[f"layers.{i}.blocks.0.op.dt_projs_weight"].shape[-1]) for i in range(len(depths))]
    auto = all(r == math.ceil(d / 16) for r, d in zip(ranks, dims))
    if not auto and len(set(ranks)) > 1:
        raise ValueError(f"dt_rank differs between stages {ranks} and is not ceil(C / 16): not a VMamba this project builds")
    return {
        "depths": depths,
        "dims": dims,
        "in_channels": int(state["patch_embed.0.weight"].shape[1]),
        "d_state": int(state[first + "op.A_logs"].shape[-1]),
        "ssm_ratio": d_inner / dims[0],
        "dt_rank": "auto" if auto else ranks[0],
        "mlp_ratio": int(state[first + "mlp.fc1.weight"].shape[0]) / dims[0],
    }


def _strip(state: Mapping[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix``, without it (and without DDP / wrapper prefixes before it)."""
    out = {}
    for name, value in state.items():
        for p in _PREFIXES:
            name = name.removeprefix(p)
        if isinstance(value, torch.Tensor) and name.startswith(prefix):
            out[name[len(prefix):]] = value
    return out


def _checkpoint_name(checkpoint: str | os.PathLike | Mapping[str, Any]) -> str:
    """How errors and logs name a checkpoint: its path, or ``"checkpoint"`` for loaded content."""
    return str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "checkpoint"


def read_encoder_checkpoint(
    checkpoint: str | os.PathLike | Mapping[str, Any], key: str | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The encoder record and weights of a checkpoint (any of the kinds in the module docstring).

    Args:
        checkpoint: a file (loaded with ``weights_only=True``) or its loaded content.
        key: entry of an original checkpoint to read (e.g. ``"student"``; default ``teacher`` when present).

    Returns:
        ``({"_target_": class path, "args": dict}, state_dict)``; for VMamba the args are those of
        :func:`infer_vmamba_config` (``in_channels`` included).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not weights-only, or holds no encoder this project can build (the file is named).
    """
    source = _checkpoint_name(checkpoint)
    content = load_weights_only(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    if not isinstance(content, Mapping):
        raise ValueError(f"{source}: expected a mapping (a checkpoint or state dict), got {type(content).__name__}")
    record = content.get("network_config") if key is None else None
    entry = content.get("encoder_config") if key is None else None  # a pretraining checkpoint naming its encoder
    try:
        if isinstance(entry, Mapping) and "_target_" in entry and isinstance(content.get("network"), Mapping):
            return {"_target_": str(entry["_target_"]), "args": dict(entry["args"])}, encoder_state_dict(content)
        if isinstance(record, Mapping) and isinstance(content.get("state_dict"), Mapping):  # self-describing encoder file
            state = {k: v for k, v in content["state_dict"].items() if isinstance(v, torch.Tensor)}
            return {"_target_": str(record["_target_"]), "args": dict(record["args"])}, state
        if isinstance(record, Mapping) and isinstance(content.get("model"), Mapping):  # a seg / cls model.pt
            state = _strip(content["model"], "encoder.")
            encoder = dict(record.get("args") or {}).get("encoder")
            if isinstance(encoder, Mapping) and "_target_" in encoder:
                return {"_target_": str(encoder["_target_"]), "args": dict(encoder.get("args") or {})}, state
        else:
            state = encoder_state_dict(content, key)
        return {"_target_": VMAMBA_TARGET, "args": infer_vmamba_config(state)}, state
    except (KeyError, ValueError) as err:
        raise ValueError(f"{source}: cannot tell which encoder it holds: {err}") from err


def encoder_config_from_checkpoint(checkpoint: str | os.PathLike | Mapping[str, Any], key: str | None = None) -> dict[str, Any]:
    """The ``{"_target_", "args"}`` record of the encoder in ``checkpoint`` (see :func:`read_encoder_checkpoint`)."""
    return read_encoder_checkpoint(checkpoint, key)[0]


def encoder_config(encoder: nn.Module) -> str | dict[str, Any]:
    """The architecture of a built encoder as the downstream networks' ``encoder`` argument takes it.

    A :class:`VMamba` gives its config dict (without ``in_channels``, which the network's own argument sets);
    another encoder its ``{"_target_", "args"}`` record (from its ``network_args``).

    Raises:
        TypeError: an encoder that is neither a VMamba nor has ``network_args``.
    """
    if isinstance(encoder, VMamba):
        args = infer_vmamba_config(encoder.state_dict())
        args.pop("in_channels")
        return args
    return encoder_record(encoder)


def _accepted(target: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` that the class ``target`` takes (all of them when it takes ``**kwargs``); the training options it
    does not take (e.g. ``drop_path_rate`` of an encoder class without stochastic depth) are named in a warning."""
    params = inspect.signature(instantiate(target, "callable")).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    dropped = sorted(k for k in kwargs if k not in params)
    if dropped:
        logger.warning("%s takes no %s: not applied", target, ", ".join(dropped))
    return {k: v for k, v in kwargs.items() if k in params}


def build_pretrained_encoder(
    checkpoint: str | os.PathLike | Mapping[str, Any],
    init: str = "pretrained",
    key: str | None = None,
    in_channels: int | None = None,
    **overrides: Any,
) -> nn.Module:
    """The encoder a checkpoint holds, with its weights (``init="pretrained"``) or randomly initialised (``"random"``).

    Args:
        checkpoint: any file :func:`read_encoder_checkpoint` reads, or its loaded content (to build several
            encoders from one read).
        init: ``"pretrained"`` or ``"random"`` (same architecture, fresh weights: the control arm).
        key: entry of an original checkpoint to read (default ``teacher`` when present).
        in_channels: input channels of the data (default the checkpoint's); a 3-channel stem loads into a
            1-channel encoder summed over colour, and back.
        overrides: training options of the encoder (e.g. ``drop_path_rate``), passed where the class takes them.

    Returns:
        the encoder module.

    Raises:
        ValueError: an unknown ``init``; a file that is unreadable, holds no encoder, or whose weights do not fit
            the encoder it describes (the file is named).
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    source = _checkpoint_name(checkpoint)
    record, state = read_encoder_checkpoint(checkpoint, key)
    args = dict(record["args"])
    if in_channels is not None:
        args["in_channels"] = int(in_channels)
    encoder = build_from_record({"_target_": record["_target_"], "args": args}, **_accepted(record["_target_"], overrides))
    if init == "pretrained":
        try:
            report = load_openus_checkpoint(encoder, state)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from err
        missing = [k for k in report.missing_keys if k != "masked_embed"]  # the mask token is pretraining-only
        if missing:
            raise ValueError(f"{source}: the encoder it describes has tensors the file lacks: {missing[:8]}")
        logger.info("encoder %s from %s: %d tensors loaded", record["_target_"], source, len(report.loaded))
    else:
        logger.info("encoder %s as in %s, randomly initialised (init=random)", record["_target_"], source)
    return encoder
