"""``OpenUSClassifier``: an encoder (VMamba or ViT), its pooled features, an optional norm and a linear head."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from .checkpoint import load_openus_checkpoint
from .factory import CLASSIFIER_MODES, FreezableEncoder, build_encoder, param_groups, resolve_freeze_encoder
from .layers import plain_tensor
from .task_heads import pooled_features

__all__ = ["OpenUSClassifier"]

_HEAD_NORMS = ("layer", "batch", "none")


class OpenUSClassifier(FreezableEncoder):
    """Image classifier on an encoder's pooled features -> norm -> linear: a VMamba's last-stage map averaged over
    space, or a :class:`ViTEncoder`'s mean token (:func:`~openus_monai.networks.task_heads.pooled_features`).

    As :class:`~openus_monai.networks.OpenUSSegNet`, ``freeze_encoder`` chooses the protocol:

    - ``freeze_encoder=True``, a linear probe (the original's evaluation protocol): the encoder is frozen
      (``requires_grad=False``), kept in ``eval()`` mode even when the classifier trains (no stochastic
      depth), and run without autograd; only the norm and the head learn.
    - ``freeze_encoder=False`` (fine-tuning): everything learns; :meth:`param_groups` gives the encoder a lower
      learning rate with layer-wise decay.

    Args:
        encoder: an encoder module, a preset name (``"vmamba_small"``), a ``VMamba`` config dict
            (e.g. ``{"depths": [1, 1, 1, 1], "dims": 16}``) or an encoder record (``{"_target_", "args"}``, e.g. a
            ViT's), built with :func:`build_encoder`.
        num_classes: number of classes (output logits).
        in_channels: input channels when the encoder is built here (1 for grayscale ultrasound); ignored
            when ``encoder`` is a module.
        pretrained: encoder checkpoint (OpenUS, VMamba ImageNet, exported by this project, or a checkpoint of
            this classifier or of the segmentation network); ``None`` or ``""`` keeps the random initialisation.
            When the encoder is built here its architecture is the checkpoint's, whatever ``encoder`` says.
            A 3-channel stem is adapted to a 1-channel encoder.
        checkpoint_key: entry of ``pretrained`` to read (default: ``teacher`` when present).
        freeze_encoder: freeze the encoder (see above).
        head_norm: norm on the pooled features: ``"layer"`` (LayerNorm), ``"batch"`` (BatchNorm1d without
            affine parameters, as in MAE's linear probing) or ``"none"``.
        dropout: dropout before the linear head.
        init: ``"pretrained"`` (load ``pretrained``'s weights) or ``"random"`` (the architecture ``pretrained``
            describes, random weights: the control arm of a comparison).
        mode: deprecated spelling of ``freeze_encoder``: ``"linear_probe"`` (frozen) or ``"finetune"``.
        encoder_kwargs: overrides for the encoder preset or config (e.g. ``drop_path_rate=0.1``).

    Example::

        net = OpenUSClassifier({"depths": [1, 1, 1, 1], "dims": 16}, num_classes=3, freeze_encoder=True)
        logits = net(torch.randn(2, 1, 64, 64))       # [2, 3]
        feats = net.forward_features(x)                # [2, 128] pooled, before the norm
        groups = net.param_groups(lr=1e-3, weight_decay=0.05, layer_decay=0.75, encoder_lr_scale=0.1)
    """

    def __init__(
        self,
        encoder: nn.Module | str | Mapping[str, Any] = "vmamba_small",
        num_classes: int = 2,
        in_channels: int = 1,
        pretrained: str | os.PathLike | None = None,
        checkpoint_key: str | None = None,
        freeze_encoder: bool = False,
        head_norm: str | None = "layer",
        dropout: float = 0.0,
        mode: str | None = None,
        init: str = "pretrained",
        **encoder_kwargs: Any,
    ) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if isinstance(encoder, nn.Module):
            if encoder_kwargs:
                raise ValueError(f"encoder_kwargs {sorted(encoder_kwargs)} apply only when the encoder is built here")
            if pretrained and init == "pretrained":
                load_openus_checkpoint(encoder, pretrained, key=checkpoint_key)
        else:
            encoder = build_encoder(
                encoder, in_channels=in_channels, pretrained=pretrained or None, checkpoint_key=checkpoint_key, init=init, **encoder_kwargs
            )
        if not hasattr(encoder, "num_features"):
            raise TypeError(f"encoder must have num_features (a VMamba or a ViTEncoder), got {type(encoder).__name__}")
        self.encoder = encoder
        self.num_classes = int(num_classes)
        features = int(encoder.num_features)
        head_norm = "none" if head_norm is None else str(head_norm).lower()
        if head_norm not in _HEAD_NORMS:
            raise ValueError(f"head_norm must be one of {_HEAD_NORMS} (or None), got {head_norm!r}")
        self.head_norm = head_norm
        if head_norm == "layer":
            self.norm: nn.Module = nn.LayerNorm(features)
        elif head_norm == "batch":
            self.norm = nn.BatchNorm1d(features, affine=False)
        else:
            self.norm = nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(features, self.num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)
        self.set_freeze_encoder(resolve_freeze_encoder(freeze_encoder, mode))

    @property
    def mode(self) -> str:
        """``"linear_probe"`` (frozen encoder) or ``"finetune"``: the former name of :attr:`freeze_encoder`."""
        return CLASSIFIER_MODES[0] if self.freeze_encoder else CLASSIFIER_MODES[1]

    @property
    def num_features(self) -> int:
        """Width of the pooled features (``C_3`` of a VMamba, ``D`` of a ViT)."""
        return int(self.encoder.num_features)

    def set_mode(self, mode: str) -> OpenUSClassifier:
        """Deprecated: :meth:`set_freeze_encoder` (``"linear_probe"``: frozen, ``"finetune"``: not)."""
        return self.set_freeze_encoder(resolve_freeze_encoder(mode=mode))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_channels, H, W] -> [B, D]``: the encoder's pooled features (a VMamba's last-stage map after its
        output norm averaged over space; a ViT's final tokens averaged)."""
        if torch.jit.is_scripting():
            return self.encoder(x)[-1].mean(dim=(2, 3))
        x = plain_tensor(x)
        if self.freeze_encoder and not x.requires_grad:
            with torch.no_grad():  # frozen encoder: no graph needed unless the caller wants input gradients
                features = self.encoder(x)
        else:
            features = self.encoder(x)
        return pooled_features(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_channels, H, W]`` (H, W divisible by 32; 16 for a ViT) ``-> [B, num_classes]`` logits."""
        return self.head(self.dropout(self.norm(self.forward_features(x))))

    def param_groups(
        self, lr: float, weight_decay: float = 0.0, layer_decay: float = 1.0, encoder_lr_scale: float = 1.0
    ) -> list[dict[str, Any]]:
        """Optimizer parameter groups (see :func:`openus_monai.networks.param_groups`).

        The head and norm take ``lr``; encoder parameters ``lr * encoder_lr_scale * layer_decay ** depth_from_top``.
        Norms, biases and SSM constants take no weight decay. With a frozen encoder only the head's groups.
        """
        return param_groups(
            self, weight_decay=weight_decay, lr=lr, encoder=self.encoder, encoder_prefix="encoder.",
            layer_decay=layer_decay, encoder_lr_scale=encoder_lr_scale,
        )
