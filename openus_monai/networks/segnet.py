"""OpenUSSegNet: an encoder (VMamba or ViT) and the decoder that fits it as one segmentation network."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.utils import convert_to_dst_type

from .factory import FreezableEncoder, build_encoder, param_groups
from .layers import plain_tensor
from .task_heads import decode, segmentation_decoder

__all__ = ["OpenUSSegNet"]

logger = logging.getLogger(__name__)


class OpenUSSegNet(FreezableEncoder):
    """``[B, in_channels, H, W] -> [B, num_classes, H, W]`` logits from an encoder and the decoder that fits it:
    a VMamba and the channel-aware :class:`MambaDecoder`, or a :class:`ViTEncoder` and the UNETR-style
    :class:`UNETRDecoder` (chosen by :func:`~openus_monai.networks.task_heads.segmentation_decoder`).

    One tensor in, one tensor out, so MONAI's inferers and ``monai.bundle verify_net_in_out`` apply.
    H and W must be divisible by 32 (VMamba) or 16 (ViT) (resize or ``DivisiblePadd(k=32)`` first).

    The encoder and decoder are either given as modules or built here:

    - ``encoder``: a module, a preset name (``"vmamba_small"``...), a ``VMamba`` config dict or an encoder
      record (``{"_target_", "args"}``, e.g. a ViT's), built by :func:`~openus_monai.networks.build_encoder` with
      ``in_channels``, ``pretrained`` and ``drop_path_rate``;
    - ``decoder``: a module taking the four encoder maps, or None / a dict of keyword arguments of the decoder that
      fits the encoder (:class:`MambaDecoder`: its ``encoder_dims`` and ``num_classes`` are filled in;
      :class:`UNETRDecoder`: ``feature_size``...).

    Two fine-tuning protocols:

    - ``freeze_encoder=True`` (the original OpenUS protocol): the encoder takes no gradient and stays in
      eval mode (no stochastic depth) even when the network is in train mode;
    - ``freeze_encoder=False``: everything trains; :meth:`param_groups` gives the encoder its own, lower
      learning rate with layer-wise decay.

    Args:
        encoder: an encoder module, a preset name, a ``VMamba`` config dict or an encoder record.
        decoder: a decoder module, or None / dict of arguments of the decoder that fits the encoder.
        in_channels: input channels when the encoder is built here (1 for grayscale ultrasound).
        num_classes: output channels, background included (2 for lesion vs background).
        pretrained: encoder checkpoint (exported by the pretraining bundle, an original OpenUS or VMamba
            checkpoint, a seg/cls ``model.pt``); None or ``""`` keeps the random initialisation. Only when the
            encoder is built here; the encoder's architecture is then the checkpoint's, whatever ``encoder`` says.
        checkpoint_key: entry of the checkpoint to read (default: ``teacher`` when present).
        freeze_encoder: freeze the encoder (see above).
        drop_path_rate: stochastic depth of the encoder when built here.
        decoder_depths: Mamba decoder blocks per stage (int or 3 ints), when the decoder is built here (VMamba).
        decoder_drop_path_rate: stochastic depth of the Mamba decoder when built here (VMamba).
        init: ``"pretrained"`` (load ``pretrained``'s weights) or ``"random"`` (its architecture, random weights).

    Example::

        net = OpenUSSegNet("vmamba_small", in_channels=1, num_classes=2, pretrained="encoder.pt")
        logits = net(torch.randn(2, 1, 224, 224))     # [2, 2, 224, 224]
        opt = torch.optim.AdamW(net.param_groups(lr=1e-4, weight_decay=0.05, encoder_lr_scale=0.1, layer_decay=0.9))
    """

    def __init__(
        self,
        encoder: nn.Module | str | Mapping[str, Any] = "vmamba_small",
        decoder: nn.Module | Mapping[str, Any] | None = None,
        in_channels: int = 1,
        num_classes: int = 2,
        pretrained: str | os.PathLike | None = None,
        checkpoint_key: str | None = None,
        freeze_encoder: bool = False,
        drop_path_rate: float = 0.1,
        decoder_depths: int | Sequence[int] = 2,
        decoder_drop_path_rate: float = 0.1,
        init: str = "pretrained",
    ) -> None:
        super().__init__()
        if isinstance(encoder, nn.Module):
            if pretrained:
                raise ValueError("pass `pretrained` only when OpenUSSegNet builds the encoder; load weights into your module first")
            self.encoder = encoder
        else:
            self.encoder = build_encoder(
                dict(encoder) if isinstance(encoder, Mapping) else encoder,
                in_channels=in_channels,
                pretrained=pretrained or None,
                checkpoint_key=checkpoint_key,
                init=init,
                drop_path_rate=drop_path_rate,
            )
        if isinstance(decoder, nn.Module):
            self.decoder = decoder
        else:
            self.decoder = segmentation_decoder(self.encoder, num_classes, decoder_depths, decoder_drop_path_rate, decoder)
        self.in_channels = getattr(self.encoder, "in_channels", in_channels)
        self.num_classes = getattr(self.decoder, "num_classes", num_classes)
        self.set_freeze_encoder(freeze_encoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: ``[B, in_channels, H, W]``, H and W divisible by 32 (VMamba) or 16 (ViT).

        Returns:
            logits ``[B, num_classes, H, W]``.
        """
        if torch.jit.is_scripting():  # plain tensors in and out, no frozen-encoder bookkeeping
            return self.decoder(self.encoder(x))
        source, x = x, plain_tensor(x)
        if self.freeze_encoder:
            with torch.no_grad():
                features = self.encoder(x)
        else:
            features = self.encoder(x)
        logits = decode(self.decoder, x, features)
        if source is not x:  # hand back the input's type and metadata (MONAI's Invertd needs them)
            logits = convert_to_dst_type(logits, source, dtype=logits.dtype)[0]
        return logits

    def param_groups(
        self, lr: float, weight_decay: float, encoder_lr_scale: float = 1.0, layer_decay: float = 1.0
    ) -> list[dict[str, Any]]:
        """Optimizer parameter groups: the decoder at ``lr``; the encoder (unless frozen) at
        ``lr * encoder_lr_scale * layer_decay ** (depth from the top)``; no weight decay on norms, biases and
        SSM constants. See :func:`~openus_monai.networks.param_groups`.
        """
        return param_groups(
            self, weight_decay=weight_decay, lr=lr, encoder=self.encoder, encoder_prefix="encoder.",
            layer_decay=layer_decay, encoder_lr_scale=encoder_lr_scale,
        )
