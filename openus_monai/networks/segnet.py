"""OpenUSSegNet: a VMamba encoder and the channel-aware Mamba decoder as one segmentation network."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.utils import convert_to_dst_type

from .decoder import MambaDecoder
from .factory import FreezableEncoder, build_encoder, param_groups
from .layers import plain_tensor
from .vmamba import VMamba

__all__ = ["OpenUSSegNet"]

logger = logging.getLogger(__name__)


class OpenUSSegNet(FreezableEncoder):
    """``[B, in_channels, H, W] -> [B, num_classes, H, W]`` logits from a VMamba encoder and a :class:`MambaDecoder`.

    One tensor in, one tensor out, so MONAI's inferers and ``monai.bundle verify_net_in_out`` apply.
    H and W must be divisible by 32 (resize or ``DivisiblePadd(k=32)`` first).

    The encoder and decoder are either given as modules or built here:

    - ``encoder``: a :class:`VMamba`, a preset name (``"vmamba_small"``...) or a ``VMamba`` config dict,
      built by :func:`~openus_monai.networks.build_encoder` with ``in_channels``, ``pretrained`` and
      ``drop_path_rate``;
    - ``decoder``: a module taking the four encoder maps, or None / a dict of :class:`MambaDecoder`
      keyword arguments (its ``encoder_dims`` and ``num_classes`` are filled in).

    Two fine-tuning protocols:

    - ``freeze_encoder=True`` (the original OpenUS protocol): the encoder takes no gradient and stays in
      eval mode (no stochastic depth) even when the network is in train mode;
    - ``freeze_encoder=False``: everything trains; :meth:`param_groups` gives the encoder its own, lower
      learning rate with layer-wise decay.

    Args:
        encoder: a :class:`VMamba`, a preset name or a ``VMamba`` config dict.
        decoder: a decoder module, or None / dict of :class:`MambaDecoder` arguments.
        in_channels: input channels when the encoder is built here (1 for grayscale ultrasound).
        num_classes: output channels, background included (2 for lesion vs background).
        pretrained: encoder checkpoint (exported by the pretraining bundle, an original OpenUS or VMamba
            checkpoint, a seg/cls ``model.pt``); None or ``""`` keeps the random initialisation. Only when the
            encoder is built here; the encoder's architecture is then the checkpoint's, whatever ``encoder`` says.
        checkpoint_key: entry of the checkpoint to read (default: ``teacher`` when present).
        freeze_encoder: freeze the encoder (see above).
        drop_path_rate: stochastic depth of the encoder when built here.
        decoder_depths: decoder blocks per stage (int or 3 ints), when the decoder is built here.
        decoder_drop_path_rate: stochastic depth of the decoder when built here.
        init: ``"pretrained"`` (load ``pretrained``'s weights) or ``"random"`` (its architecture, random weights).

    Example::

        net = OpenUSSegNet("vmamba_small", in_channels=1, num_classes=2, pretrained="encoder.pt")
        logits = net(torch.randn(2, 1, 224, 224))     # [2, 2, 224, 224]
        opt = torch.optim.AdamW(net.param_groups(lr=1e-4, weight_decay=0.05, encoder_lr_scale=0.1, layer_decay=0.9))
    """

    def __init__(
        self,
        encoder: VMamba | str | Mapping[str, Any] = "vmamba_small",
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
        dims = getattr(self.encoder, "dims", None)
        if isinstance(decoder, nn.Module):
            self.decoder = decoder
        else:
            if dims is None:
                raise ValueError("the encoder has no `dims`; pass a decoder module")
            kwargs = {"depths": decoder_depths, "drop_path_rate": decoder_drop_path_rate, **dict(decoder or {})}
            self.decoder = MambaDecoder(dims, num_classes=num_classes, **kwargs)
        self.in_channels = getattr(self.encoder, "in_channels", in_channels)
        self.num_classes = getattr(self.decoder, "num_classes", num_classes)
        self.set_freeze_encoder(freeze_encoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: ``[B, in_channels, H, W]``, H and W divisible by 32.

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
        logits = self.decoder(features)
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
        encoder = self.encoder if isinstance(self.encoder, VMamba) else None
        return param_groups(
            self, weight_decay=weight_decay, lr=lr, encoder=encoder, encoder_prefix="encoder.",
            layer_decay=layer_decay, encoder_lr_scale=encoder_lr_scale,
        )
