"""Self-describing encoder files: weights plus the class and arguments that rebuild the encoder, as plain data.

An encoder file (``backbone.pt`` of a pretraining run, or ``python -m openus_monai export-backbone``) is::

    {"state_dict": {...}, "network_config": {"_target_": "openus_monai.networks.ViTEncoder", "args": {...}},
     "meta": {"method": "usf_mae", "image_size": 224}}

It loads with ``torch.load(..., weights_only=True)``; :func:`load_encoder_file` rebuilds the encoder from the file
alone. ``network_config`` has the ``{"_target_", "args"}`` form of the bundles' ``NetworkRecord`` (whole networks).
An encoder is recordable when it exposes ``network_args``: the constructor arguments that fix its architecture.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
from monai.utils import instantiate

from ..io import load_weights_only

__all__ = ["build_from_record", "class_path", "encoder_file", "encoder_record", "is_encoder_file", "load_encoder_file", "plain_data"]


def plain_data(value: Any) -> Any:
    """``value`` as JSON-like data (lists for tuples), so that it survives ``weights_only`` loading.

    Raises:
        TypeError: a value that is not plain data (a module, a tensor, an object).
    """
    if isinstance(value, Mapping):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{value!r} ({type(value).__name__}) cannot be recorded as plain data")


def class_path(cls: type) -> str:
    """The shortest public import path of ``cls``: the highest package of its module that exports it
    (``openus_monai.networks.VMamba`` rather than ``openus_monai.networks.vmamba.VMamba``)."""
    parts = cls.__module__.split(".")
    for depth in range(1, len(parts) + 1):
        module = importlib.import_module(".".join(parts[:depth]))
        if getattr(module, cls.__qualname__, None) is cls:
            return f"{module.__name__}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def encoder_record(module: nn.Module) -> dict[str, Any]:
    """``{"_target_": class path, "args": module.network_args}`` of a recordable encoder.

    Raises:
        TypeError: ``module`` has no ``network_args``.
    """
    args = getattr(module, "network_args", None)
    if not isinstance(args, Mapping):
        raise TypeError(f"{type(module).__name__} has no network_args; it cannot be written as a self-describing encoder")
    return {"_target_": class_path(type(module)), "args": plain_data(dict(args))}


def build_from_record(record: Mapping[str, Any], **overrides: Any) -> nn.Module:
    """A new (randomly initialised) module as ``record`` describes, with ``overrides`` on its arguments
    (e.g. ``drop_path_rate`` for fine-tuning).

    Raises:
        TypeError: the record's ``_target_`` is not a ``torch.nn.Module`` class (a checkpoint file names what
            is built from it, so only network classes are called: ``weights_only`` loading stays safe).
    """
    target = str(record["_target_"])
    cls = instantiate(target, "callable")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"the record's _target_ {target!r} is not a torch.nn.Module class; it is not built")
    return cls(**{**dict(record["args"]), **overrides})


def encoder_file(module: nn.Module, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The content of a self-describing encoder file: CPU weights, :func:`encoder_record`, plain ``meta``."""
    return {
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "network_config": encoder_record(module),
        "meta": plain_data(dict(meta or {})),
    }


def is_encoder_file(content: Any) -> bool:
    """Whether a loaded checkpoint is a self-describing encoder file."""
    return isinstance(content, Mapping) and isinstance(content.get("state_dict"), Mapping) and isinstance(content.get("network_config"), Mapping)


def load_encoder_file(path_or_content: str | os.PathLike | Mapping[str, Any], **overrides: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the encoder of a self-describing file and load its weights (strictly).

    Args:
        path_or_content: the file (loaded with ``weights_only=True``) or its loaded content.
        overrides: constructor arguments to change (not the architecture's shape).

    Returns:
        ``(encoder, meta)``.

    Raises:
        ValueError: the file is not a self-describing encoder (e.g. a plain state dict written before records).
    """
    content = load_weights_only(path_or_content) if isinstance(path_or_content, (str, os.PathLike)) else path_or_content
    if not is_encoder_file(content):
        raise ValueError(f"{path_or_content if isinstance(path_or_content, (str, os.PathLike)) else 'checkpoint'} is not a self-describing "
                         "encoder file (no state_dict + network_config); rebuild the encoder from its config and use load_openus_checkpoint")
    encoder = build_from_record(content["network_config"], **overrides)
    encoder.load_state_dict({k: v for k, v in content["state_dict"].items() if isinstance(v, torch.Tensor)}, strict=True)
    return encoder, dict(content.get("meta") or {})
