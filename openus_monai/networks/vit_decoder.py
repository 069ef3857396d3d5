"""A UNETR-style segmentation decoder for :class:`~openus_monai.networks.ViTEncoder` features (MONAI's UNETR blocks)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock

from .vit import ViTEncoder

__all__ = ["UNETRDecoder", "ViTUNETR"]


class UNETRDecoder(nn.Module):
    """UNETR's decoder (Hatamizadeh et al., 2022) in 2-D, on four ViT hidden states of a patch-16 encoder.

    The hidden states, as maps at 1/16 of the image, are brought to 1/2, 1/4 and 1/8 by transposed convolutions
    (MONAI's :class:`UnetrPrUpBlock`, 3, 2 and 1 up-samplings), the last one is up-sampled step by step and
    joined with them (:class:`UnetrUpBlock`), and finally with a convolutional encoding of the image itself
    (:class:`UnetrBasicBlock`) at full resolution.

    Args:
        embed_dim: the ViT's width ``D``.
        in_channels: image channels.
        out_channels: classes ``K``.
        feature_size: channels at full resolution (x2, x4, x8 at 1/2, 1/4, 1/8).
        norm_name: norm of the conv blocks (MONAI name, e.g. ``"instance"`` or ``"batch"``).
        res_block: residual conv blocks.
    """

    def __init__(self, embed_dim: int, in_channels: int = 1, out_channels: int = 2, feature_size: int = 16, norm_name: str | tuple = "instance", res_block: bool = True) -> None:
        super().__init__()
        f = feature_size
        self.encoder1 = UnetrBasicBlock(2, in_channels, f, kernel_size=3, stride=1, norm_name=norm_name, res_block=res_block)
        self.encoder2 = UnetrPrUpBlock(2, embed_dim, f * 2, num_layer=2, kernel_size=3, stride=1, upsample_kernel_size=2, norm_name=norm_name, res_block=res_block)
        self.encoder3 = UnetrPrUpBlock(2, embed_dim, f * 4, num_layer=1, kernel_size=3, stride=1, upsample_kernel_size=2, norm_name=norm_name, res_block=res_block)
        self.encoder4 = UnetrPrUpBlock(2, embed_dim, f * 8, num_layer=0, kernel_size=3, stride=1, upsample_kernel_size=2, norm_name=norm_name, res_block=res_block)
        self.decoder5 = UnetrUpBlock(2, embed_dim, f * 8, kernel_size=3, upsample_kernel_size=2, norm_name=norm_name, res_block=res_block)
        self.decoder4 = UnetrUpBlock(2, f * 8, f * 4, kernel_size=3, upsample_kernel_size=2, norm_name=norm_name, res_block=res_block)
        self.decoder3 = UnetrUpBlock(2, f * 4, f * 2, kernel_size=3, upsample_kernel_size=2, norm_name=norm_name, res_block=res_block)
        self.decoder2 = UnetrUpBlock(2, f * 2, f, kernel_size=3, upsample_kernel_size=2, norm_name=norm_name, res_block=res_block)
        self.out = UnetOutBlock(2, f, out_channels)

    def forward(self, images: torch.Tensor, hidden_states: Sequence[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        """Args:
            images: ``[B, C, H, W]`` (``H = 16 h``, ``W = 16 w``).
            hidden_states: four ``[B, h * w, D]`` token tensors, shallow to deep (the last may be the final tokens).
            grid: ``(h, w)``.

        Returns:
            logits ``[B, K, H, W]``.
        """
        if len(hidden_states) != 4:
            raise ValueError(f"UNETRDecoder needs 4 hidden states, got {len(hidden_states)}")
        z1, z2, z3, z4 = (ViTEncoder.feature_map(h, grid) for h in hidden_states)
        skip1, skip2, skip3, skip4 = self.encoder1(images), self.encoder2(z1), self.encoder3(z2), self.encoder4(z3)
        x = self.decoder5(z4, skip4)
        x = self.decoder4(x, skip3)
        x = self.decoder3(x, skip2)
        return self.out(self.decoder2(x, skip1))


class ViTUNETR(nn.Module):
    """A ViT encoder and a :class:`UNETRDecoder` on its four ``out_indices`` hidden states: ``[B, C, H, W]`` ->
    ``[B, K, H, W]`` for ``H``, ``W`` multiples of 16.

    Args:
        encoder: a patch-16 :class:`ViTEncoder` with four ``out_indices`` (the presets' 2, 5, 8, 11).
        out_channels: classes ``K``.
        feature_size, norm_name, res_block: see :class:`UNETRDecoder`.
    """

    def __init__(self, encoder: ViTEncoder, out_channels: int = 2, feature_size: int = 16, norm_name: str | tuple = "instance", res_block: bool = True) -> None:
        super().__init__()
        if encoder.patch_size != 16 or len(encoder.out_indices) != 4:
            raise ValueError(f"ViTUNETR needs patch 16 and 4 out_indices, got patch {encoder.patch_size}, out_indices {encoder.out_indices}")
        self.encoder = encoder
        self.decoder = UNETRDecoder(encoder.embed_dim, encoder.in_channels, out_channels, feature_size, norm_name, res_block)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(images)
        return self.decoder(images, feats.hidden_states, feats.grid)
