"""The task heads that fit an encoder, whatever its family: the one place that pairs an encoder with a
segmentation decoder or a pooled-feature classifier input.

Two families of encoder reach the downstream networks (from a preset, a config or any recipe's ``--pretrained``
file, :func:`~openus_monai.networks.build_encoder`):

- map encoders (:class:`~openus_monai.networks.VMamba`): ``forward`` gives four stage maps ``[B, C_i, h_i, w_i]``
  and the encoder has ``dims``; segmentation decodes them with the channel-aware :class:`MambaDecoder`, the
  pooled features are the last map averaged over space;
- token encoders (:class:`~openus_monai.networks.ViTEncoder`): ``forward`` gives :class:`ViTFeatures`;
  segmentation decodes four hidden states and the image with the UNETR-style :class:`UNETRDecoder`, the pooled
  features are the mean of the final tokens (MAE's global pool).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from .decoder import MambaDecoder
from .vit import ViTEncoder, ViTFeatures
from .vit_decoder import UNETRDecoder

__all__ = ["decode", "feature_maps", "pooled_features", "segmentation_decoder"]

logger = logging.getLogger(__name__)


def segmentation_decoder(
    encoder: nn.Module,
    num_classes: int,
    depths: int | Sequence[int] = 2,
    drop_path_rate: float = 0.1,
    options: Mapping[str, Any] | None = None,
) -> nn.Module:
    """The segmentation decoder that fits ``encoder``.

    Args:
        encoder: a :class:`ViTEncoder` (patch 16, four ``out_indices``) or an encoder with ``dims`` (VMamba).
        num_classes: output channels ``K``.
        depths: :class:`MambaDecoder` blocks per stage (map encoders only).
        drop_path_rate: :class:`MambaDecoder` stochastic depth (map encoders only).
        options: more keyword arguments of the decoder (:class:`MambaDecoder`, or :class:`UNETRDecoder`:
            ``feature_size``, ``norm_name``, ``res_block``).

    Returns:
        the decoder; :func:`decode` runs it on the encoder's output.

    Raises:
        ValueError: a ViT that is not patch 16 with four ``out_indices``, or an encoder of neither family.
    """
    options = dict(options or {})
    if isinstance(encoder, ViTEncoder):
        if encoder.patch_size != 16 or len(encoder.out_indices) != 4:
            raise ValueError(
                f"the ViT segmentation decoder needs patch 16 and 4 out_indices (a ViT of at least 4 blocks), got patch "
                f"{encoder.patch_size}, out_indices {encoder.out_indices}"
            )
        logger.info("ViT encoder: UNETR-style decoder (decoder_depths / decoder_drop_path_rate apply to VMamba only)")
        return UNETRDecoder(encoder.embed_dim, encoder.in_channels, num_classes, **options)
    dims = getattr(encoder, "dims", None)
    if dims is None:
        raise ValueError(f"no segmentation decoder fits {type(encoder).__name__} (neither a ViTEncoder nor with `dims`); pass a decoder module")
    return MambaDecoder(dims, num_classes=num_classes, **{"depths": depths, "drop_path_rate": drop_path_rate, **options})


def decode(decoder: nn.Module, images: torch.Tensor, features: ViTFeatures | Sequence[torch.Tensor]) -> torch.Tensor:
    """Logits ``[B, K, H, W]`` of ``decoder`` from the encoder's ``features`` of ``images [B, C, H, W]``
    (a :class:`UNETRDecoder` also reads the image; a map decoder the four maps only)."""
    if isinstance(features, ViTFeatures):
        return decoder(images, features.hidden_states, features.grid)
    return decoder(features)


def pooled_features(features: ViTFeatures | Sequence[torch.Tensor]) -> torch.Tensor:
    """The global features ``[B, D]`` of an encoder's output: a ViT's mean token, or the last map averaged over space."""
    if isinstance(features, ViTFeatures):
        return features.pooled
    return features[-1].mean(dim=(2, 3))


def feature_maps(features: ViTFeatures | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """An encoder's output as maps: a VMamba's stage maps ``[B, C_i, h_i, w_i]``, or a ViT's ``out_indices``
    hidden states as ``[B, D, h, w]`` (all at 1/16 of the image)."""
    if isinstance(features, ViTFeatures):
        return [ViTEncoder.feature_map(h, features.grid) for h in features.hidden_states]
    return list(features)
