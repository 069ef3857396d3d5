"""Build encoders by name, optionally from a checkpoint; group parameters for optimisers."""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch.nn as nn
from monai.utils import instantiate

from ..options import as_flag
from .pretrained import INITS, build_pretrained_encoder
from .vmamba import VMamba, vmamba_base, vmamba_small, vmamba_tiny

__all__ = [
    "CLASSIFIER_MODES",
    "PRESETS",
    "FreezableEncoder",
    "build_encoder",
    "encoder_layer_id",
    "is_no_weight_decay",
    "param_groups",
    "resolve_freeze_encoder",
    "set_trainable",
]

logger = logging.getLogger(__name__)

PRESETS = {"vmamba_tiny": vmamba_tiny, "vmamba_small": vmamba_small, "vmamba_base": vmamba_base}

# Parameters that take no weight decay: norms and biases, the SSM's A, D and step-size bias, the mask token.
_NO_DECAY_SUFFIXES = ("bias", "A_logs", "Ds", "dt_projs_bias", "masked_embed")


def build_encoder(
    name: str | Mapping[str, Any] = "vmamba_small",
    in_channels: int = 3,
    pretrained: str | os.PathLike | None = None,
    checkpoint_key: str | None = None,
    init: str = "pretrained",
    **kwargs: Any,
) -> nn.Module:
    """An encoder from a preset name (``vmamba_tiny``/``small``/``base``), a ``VMamba`` config dict, an encoder
    record, or the checkpoint ``pretrained`` alone.

    With ``pretrained``, the architecture is the checkpoint's (self-describing files, seg/cls ``model.pt``,
    pretraining and original OpenUS checkpoints: :func:`~openus_monai.networks.pretrained.build_pretrained_encoder`),
    whatever ``name`` says (a log line notes it); ``init="random"`` builds it without loading the weights.

    Args:
        name: preset name, keyword arguments of :class:`VMamba` (e.g. ``{"depths": [1, 1, 2, 1], "dims": 32}``),
            or a ``{"_target_", "args"}`` record of another encoder class.
        in_channels: 1 (grayscale) or 3.
        pretrained: optional checkpoint (OpenUS, VMamba ImageNet, or written by this project); ``None``
            or ``""`` keeps the random initialisation.
        checkpoint_key: entry of the checkpoint to read (default: ``teacher`` when present).
        init: ``"pretrained"`` (load the weights of ``pretrained``) or ``"random"`` (its architecture only).
        kwargs: overrides passed to the preset (e.g. ``drop_path_rate``).
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if pretrained:
        encoder = build_pretrained_encoder(pretrained, init, key=checkpoint_key, in_channels=in_channels, **kwargs)
        logger.info("encoder architecture taken from %s (the configured encoder %r is not used)", pretrained, name)
        return encoder
    if isinstance(name, Mapping) and "_target_" in name:
        encoder = instantiate(str(name["_target_"]), "default", **{**dict(name.get("args") or {}), "in_channels": in_channels, **kwargs})
    elif isinstance(name, Mapping):
        encoder = VMamba(**{**name, "in_channels": in_channels, **kwargs})
    elif name in PRESETS:
        encoder = PRESETS[name](in_channels=in_channels, **kwargs)
    else:
        raise ValueError(f"unknown encoder {name!r}; choose from {sorted(PRESETS)} or pass a VMamba config dict")
    return encoder


def set_trainable(module: nn.Module, trainable: bool) -> nn.Module:
    """Turn ``requires_grad`` on or off for every parameter of ``module``; returns it."""
    for p in module.parameters():
        p.requires_grad_(trainable)
    return module


#: the deprecated ``mode`` spellings of ``freeze_encoder``: ``"linear_probe"`` (True) and ``"finetune"`` (False)
CLASSIFIER_MODES: tuple[str, ...] = ("linear_probe", "finetune")


def resolve_freeze_encoder(freeze_encoder: bool | str = False, mode: str | None = None) -> bool:
    """The ``freeze_encoder`` option as a bool, accepting the deprecated ``mode`` spelling of the classifier.

    Both downstream bundles and networks spell the option ``freeze_encoder``; the classifier used to spell it
    ``mode="linear_probe"`` (frozen) / ``mode="finetune"``, which still works with a ``DeprecationWarning``.
    Strings from a command line (``--freeze_encoder true``, which ``python -m monai.bundle`` passes as the
    string ``"true"``) are read as booleans, so that ``"false"`` does not count as set.

    Args:
        freeze_encoder: the option: a bool, ``"true"``/``"false"`` (any case; also yes/no, 1/0), or a
            deprecated mode string (e.g. passed positionally where ``mode`` used to be).
        mode: deprecated: ``"linear_probe"`` or ``"finetune"``; None when not given.

    Returns:
        whether the encoder is frozen.

    Raises:
        ValueError: an unknown string or mode, or a mode contradicting ``freeze_encoder=True``.
    """
    if isinstance(freeze_encoder, str):
        word = freeze_encoder.strip().lower()
        if mode is None and word in CLASSIFIER_MODES:
            freeze_encoder, mode = False, word
        else:
            freeze_encoder = as_flag(freeze_encoder, "freeze_encoder")
    if mode is None:
        return bool(freeze_encoder)
    if mode not in CLASSIFIER_MODES:
        raise ValueError(f"mode must be one of {CLASSIFIER_MODES}, got {mode!r}; it is deprecated: use freeze_encoder (true/false)")
    warnings.warn(
        f"mode={mode!r} is deprecated; use freeze_encoder={mode == 'linear_probe'} (the one spelling of both bundles)",
        DeprecationWarning,
        stacklevel=2,
    )
    if freeze_encoder and mode == "finetune":
        raise ValueError("freeze_encoder=True contradicts mode='finetune'; give only freeze_encoder")
    return mode == "linear_probe"


class FreezableEncoder(nn.Module):
    """Base of the downstream networks: an ``encoder`` that ``freeze_encoder`` freezes.

    A frozen encoder takes no gradient (``requires_grad=False``) and stays in ``eval()`` mode (no
    stochastic depth, fixed norms) even when the network trains. Subclasses set ``self.encoder`` and then
    call :meth:`set_freeze_encoder`.
    """

    # ``self.encoder`` (an ``nn.Module``) is set by the subclass; not annotated here: TorchScript reads class annotations
    freeze_encoder = False  # (no annotation: TorchScript cannot read postponed class annotations)
    __jit_unused_properties__ = ["mode", "num_features"]  # Python-side conveniences of the subclasses

    def __prepare_scriptable__(self) -> FreezableEncoder:
        """What ``torch.jit.script`` compiles: a shallow copy with its own submodule table, so that submodules
        replaced for scripting (the encoder: :meth:`VMamba.__prepare_scriptable__`) stay as they are here."""
        clone = copy.copy(self)
        clone._modules = self._modules.copy()
        return clone

    def set_freeze_encoder(self, freeze: bool | str = True) -> FreezableEncoder:
        """Freeze the encoder or unfreeze it (``freeze`` as :func:`resolve_freeze_encoder` reads it); returns self.

        Build the optimizer after switching: frozen parameters are left out of ``param_groups``.
        """
        self.freeze_encoder = resolve_freeze_encoder(freeze)
        set_trainable(self.encoder, not self.freeze_encoder)
        self.train(self.training)
        return self

    def train(self, mode: bool = True) -> FreezableEncoder:
        """As :meth:`torch.nn.Module.train`, but a frozen encoder stays in eval mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self


def is_no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """True for norms, biases (1-D tensors), ``A_logs``, ``Ds``, ``dt_projs_bias`` and the mask token."""
    return param.ndim <= 1 or name.endswith(_NO_DECAY_SUFFIXES)


def encoder_layer_id(name: str, depths: Iterable[int]) -> int:
    """Depth index of an encoder parameter for layer-wise lr decay: 0 = stem, 1..n = blocks, n + 1 = rest.

    A stage's downsampling counts with the first block of the next stage; output norms with the last block.
    """
    depths = list(depths)
    n_blocks = sum(depths)
    if name.startswith(("patch_embed", "masked_embed")):
        return 0
    parts = name.split(".")
    if parts[0] == "layers":
        stage = int(parts[1])
        if parts[2] == "blocks":
            return sum(depths[:stage]) + int(parts[3]) + 1
        return min(sum(depths[: stage + 1]) + 1, n_blocks)  # downsample
    if parts[0].startswith("outnorm"):
        return n_blocks
    return n_blocks + 1


def _layer_ids(encoder: nn.Module | None) -> tuple[int, Callable[[str], int]]:
    """``(n, layer_id)``: the top depth id of ``encoder`` and the function giving a parameter's depth id."""
    if encoder is not None and callable(getattr(encoder, "layer_id", None)):
        return int(encoder.num_layer_ids), encoder.layer_id
    depths = getattr(encoder, "depths", None)
    if depths is not None:
        return sum(depths) + 1, lambda name: encoder_layer_id(name, depths)
    return 0, lambda name: 0  # no layer-wise decay: every encoder parameter at ``encoder_lr_scale``


def param_groups(
    model: nn.Module,
    weight_decay: float,
    lr: float,
    encoder: nn.Module | None = None,
    encoder_prefix: str = "encoder.",
    layer_decay: float = 1.0,
    encoder_lr_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: no weight decay where :func:`is_no_weight_decay`, and for the encoder an
    lr of ``lr * encoder_lr_scale * layer_decay ** (n + 1 - layer_id)`` (layer-wise decay, BEiT style).

    Frozen parameters (``requires_grad=False``) are left out. Each group carries ``lr_scale`` and
    ``wd_scale`` so that schedulers can rescale from a base value.

    Args:
        model: the whole network.
        weight_decay: decay for weights (not for norms, biases, SSM constants).
        lr: base learning rate (heads and decoders).
        encoder: the encoder inside ``model`` whose parameters get layer-wise rates (optional): a VMamba (depth
            ids from its ``depths``, :func:`encoder_layer_id`) or an encoder with ``layer_id(name)`` and
            ``num_layer_ids`` (a ViT); another encoder gets ``encoder_lr_scale`` without layer-wise decay.
        encoder_prefix: the encoder's name prefix inside ``model``.
        layer_decay: per-block lr factor, 1.0 for none.
        encoder_lr_scale: extra factor for every encoder parameter (e.g. 0.1 to fine-tune gently).
    """
    n_layers, layer_of = _layer_ids(encoder)
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = 1.0
        if encoder is not None and name.startswith(encoder_prefix):
            scale = encoder_lr_scale * layer_decay ** (n_layers - layer_of(name[len(encoder_prefix):]))
        wd = 0.0 if is_no_weight_decay(name, param) else weight_decay
        group = groups.setdefault((scale, wd), {"params": [], "lr": lr * scale, "lr_scale": scale, "weight_decay": wd, "wd_scale": 1.0 if wd else 0.0})
        group["params"].append(param)
    return list(groups.values())
