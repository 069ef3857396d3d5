"""OpenUSFeatureExtractor: a pretrained encoder (VMamba or ViT) as an embedding model (the pretraining bundle's inference)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
from monai.inferers import Inferer

from .factory import FreezableEncoder, build_encoder
from .layers import plain_tensor
from .task_heads import feature_maps, pooled_features
from .vmamba import VMamba

__all__ = ["FeatureInferer", "OpenUSFeatureExtractor"]


class OpenUSFeatureExtractor(FreezableEncoder):
    """``[B, in_channels, H, W] -> [B, C_3]``: the encoder's last-stage map (after its output norm), averaged
    over space, i.e. the pooled ("cls") token of :meth:`VMamba.forward_tokens` and the features a classifier's
    head reads. The encoder is frozen (eval mode, no gradient).

    One tensor out, so MONAI's ``verify_net_in_out``, ``ckpt_export`` (scripting) and ``onnx_export`` apply;
    :meth:`forward_all` also gives the four stage maps. The state dict holds the encoder under ``encoder.``,
    which :func:`~openus_monai.networks.load_openus_checkpoint` strips: it loads into any downstream network.

    Args:
        encoder: a :class:`VMamba`, a preset name or a ``VMamba`` config dict.
        in_channels: input channels when the encoder is built here.
        pretrained: encoder checkpoint to load when built here (see :func:`~openus_monai.networks.build_encoder`).
        checkpoint_key: entry of that checkpoint to read.
    """

    def __init__(
        self,
        encoder: VMamba | str | Mapping[str, Any] = "vmamba_small",
        in_channels: int = 1,
        pretrained: str | os.PathLike | None = None,
        checkpoint_key: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(encoder, nn.Module):
            self.encoder = encoder
        else:
            self.encoder = build_encoder(
                dict(encoder) if isinstance(encoder, Mapping) else encoder, in_channels=in_channels,
                pretrained=pretrained or None, checkpoint_key=checkpoint_key,
            )
        self.set_freeze_encoder(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: ``[B, in_channels, H, W]``, H and W divisible by 32.

        Returns:
            the pooled embedding ``[B, C_3]``.
        """
        if torch.jit.is_scripting():
            return self.encoder(x)[-1].mean(dim=(2, 3))
        return self.forward_all(x)[0]

    @torch.no_grad()
    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The pooled embedding ``[B, C_3]`` and the four stage maps ``[B, C_i, H / 2^(i+2), W / 2^(i+2)]`` (a ViT:
        its mean token ``[B, D]`` and its ``out_indices`` hidden states as maps ``[B, D, H / 16, W / 16]``)."""
        features = self.encoder(plain_tensor(x))
        return pooled_features(features), feature_maps(features)


class FeatureInferer(Inferer):
    """MONAI inferer for an :class:`OpenUSFeatureExtractor`: the pooled embedding, or with ``feature_maps``
    a dict ``{"embedding": [B, C_3], "map0".."map3": [B, C_i, h_i, w_i]}``.

    Args:
        feature_maps: also return the four stage maps.
    """

    def __init__(self, feature_maps: bool = False) -> None:
        super().__init__()
        self.feature_maps = bool(feature_maps)

    def __call__(self, inputs: torch.Tensor, network: OpenUSFeatureExtractor, *args: Any, **kwargs: Any):
        if not self.feature_maps:
            return network(inputs)
        embedding, maps = network.forward_all(inputs)
        return {"embedding": embedding, **{f"map{i}": m for i, m in enumerate(maps)}}
