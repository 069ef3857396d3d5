"""Masked-image-modelling networks on a :class:`~openus_monai.networks.ViTEncoder`: MAE's encoder-decoder (USF-MAE)
and a SimMIM-style encoder with a mask token and a linear pixel head (USFM)."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks.pos_embed_utils import build_sincos_position_embedding
from monai.networks.blocks.transformerblock import TransformerBlock

from .vit import ViTEncoder, freeze_unused_cross_attention

__all__ = ["MAEDecoder", "MaskedAutoencoder", "MaskedImageModel"]


class MAEDecoder(nn.Module):
    """MAE's light decoder: project the visible tokens, put them back among mask tokens, add a fixed sin-cos
    position embedding, a few transformer blocks (MONAI's :class:`TransformerBlock`), and predict each patch's pixels.

    Args:
        embed_dim: encoder width ``D``.
        patch_pixels: pixels per patch ``p * p * C``.
        hidden_size, num_layers, num_heads: decoder width, depth, heads (MAE: 512, 8, 16).
        mlp_ratio: MLP width / ``hidden_size``.
    """

    def __init__(self, embed_dim: int, patch_pixels: int, hidden_size: int = 512, num_layers: int = 8, num_heads: int = 16, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.embed = nn.Linear(embed_dim, hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        nn.init.normal_(self.mask_token, std=0.02)
        self.blocks = nn.ModuleList(TransformerBlock(hidden_size, int(hidden_size * mlp_ratio), num_heads, qkv_bias=True) for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_size)
        self.pred = nn.Linear(hidden_size, patch_pixels)
        freeze_unused_cross_attention(self.blocks)
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}

    def position_embedding(self, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        if grid not in self._pos_cache:
            self._pos_cache[grid] = build_sincos_position_embedding(list(grid), self.hidden_size, 2).detach()
        return self._pos_cache[grid].to(like.device, like.dtype)

    def forward(self, visible: torch.Tensor, keep: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Args:
            visible: encoded visible tokens ``[B, K, D]``.
            keep: their positions ``[B, K]`` among the ``L = h * w`` patches.
            grid: ``(h, w)``.

        Returns:
            predicted pixels of every patch ``[B, L, p * p * C]``.
        """
        x = self.embed(visible)
        tokens = self.mask_token.to(x.dtype).expand(x.shape[0], grid[0] * grid[1], -1).clone()
        tokens = tokens.scatter(1, keep[..., None].expand(-1, -1, x.shape[-1]), x)
        tokens = tokens + self.position_embedding(grid, tokens)
        for block in self.blocks:
            tokens = block(tokens)
        return self.pred(self.norm(tokens))


class MaskedAutoencoder(nn.Module):
    """MAE: the encoder sees only the visible patches, the decoder predicts every patch.

    Args:
        encoder: the :class:`ViTEncoder` to pretrain.
        decoder_size, decoder_layers, decoder_heads: :class:`MAEDecoder` sizes.
    """

    def __init__(self, encoder: ViTEncoder, decoder_size: int = 512, decoder_layers: int = 8, decoder_heads: int = 16) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = MAEDecoder(encoder.embed_dim, encoder.patch_size**2 * encoder.in_channels, decoder_size, decoder_layers, decoder_heads)

    def forward(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``images [B, C, H, W]``, visible patch indices ``keep [B, K]`` -> pixels of every patch ``[B, L, p * p * C]``."""
        tokens, grid = self.encoder.embed(images)
        visible = tokens.gather(1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
        encoded, _ = self.encoder.blocks(visible)
        return self.decoder(encoded, keep, grid)


class MaskedImageModel(nn.Module):
    """SimMIM-style masked image model: masked patches' embeddings are replaced by a learned mask token before the
    position embedding, the encoder sees every token, and a linear head predicts each patch's pixels.

    Args:
        encoder: the :class:`ViTEncoder` to pretrain.
    """

    def __init__(self, encoder: ViTEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.mask_token = nn.Parameter(torch.zeros(1, 1, encoder.embed_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.head = nn.Linear(encoder.embed_dim, encoder.patch_size**2 * encoder.in_channels)

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``images [B, C, H, W]``, ``mask [B, L]`` bool (True = masked; None: none) -> pixels of every patch ``[B, L, p * p * C]``."""
        tokens, _ = self.encoder.embed(images, mask=mask, mask_token=self.mask_token)
        encoded, _ = self.encoder.blocks(tokens)
        return self.head(encoded)
