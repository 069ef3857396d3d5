"""ViT encoders (tiny / small / base, patch 16) on MONAI's :class:`~monai.networks.nets.ViT`, for any image size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn as nn
from monai.networks.blocks.pos_embed_utils import build_sincos_position_embedding
from monai.networks.layers import DropPath
from monai.networks.nets import ViT
from monai.utils import ensure_tuple_rep

__all__ = ["VIT_PRESETS", "ViTEncoder", "ViTFeatures", "build_vit", "freeze_unused_cross_attention", "vit_base", "vit_small", "vit_tiny"]


def freeze_unused_cross_attention(module: nn.Module) -> nn.Module:
    """Turn off gradients of the ``norm_cross_attn`` LayerNorms that MONAI's :class:`TransformerBlock` builds even
    without cross-attention: they never take part in the forward, and ``DistributedDataParallel`` refuses
    parameters that get no gradient (unless told to search for them every step). Returns ``module``."""
    for name, sub in module.named_modules():
        if name.endswith("norm_cross_attn"):
            sub.requires_grad_(False)
    return module


class ViTFeatures(NamedTuple):
    """What :meth:`ViTEncoder.forward` gives downstream.

    Attributes:
        tokens: the last block's tokens after the final LayerNorm ``[B, L, D]`` (``L = h * w`` patches, row-major).
        pooled: their mean ``[B, D]`` (MAE's global-pool representation).
        hidden_states: the tokens after each block of ``out_indices`` (before the final norm), each ``[B, L, D]``.
        grid: ``(h, w)``, the patch grid.
    """

    tokens: torch.Tensor
    pooled: torch.Tensor
    hidden_states: list[torch.Tensor]
    grid: tuple[int, int]


class ViTEncoder(nn.Module):
    """A 2-D ViT encoder without class token: MONAI's :class:`~monai.networks.nets.ViT` (conv patch embedding,
    fixed 2-D sin-cos position embedding, its transformer blocks and final norm), run block by block so that
    a method may drop tokens between the embedding and the blocks (MAE) and a decoder may read intermediate blocks.

    Images of any size divisible by the patch are accepted: the position embedding is sin-cos (not learned), so
    for a grid other than ``img_size``'s it is rebuilt for that grid with MONAI's
    :func:`~monai.networks.blocks.pos_embed_utils.build_sincos_position_embedding` (exact, not interpolated).

    Args:
        in_channels: image channels (1 for ultrasound).
        img_size: the usual input size (sets the stored position embedding; other sizes work too).
        patch_size: patch side in pixels.
        hidden_size: token width ``D``.
        num_layers: transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP width / ``D``.
        qkv_bias: bias in the qkv projection (True as in MAE's ViTs).
        dropout_rate: dropout in the blocks.
        out_indices: 0-based blocks whose outputs :meth:`forward` returns as ``hidden_states`` (default: four
            evenly spaced, ending with the last block, e.g. 2, 5, 8, 11 of 12 as UNETR reads).
        drop_path_rate: stochastic depth for fine-tuning, rising linearly over the blocks to this rate (MAE's and
            BEiT's fine-tuning recipes; MONAI's blocks have none, so the blocks' residual branches are run here).
            A training option, not part of the recorded architecture.

    Example::

        enc = vit_small(img_size=224)
        feats = enc(torch.randn(2, 1, 224, 224))   # tokens [2, 196, 384], pooled [2, 384], grid (14, 14)
        maps = enc.feature_map(feats.tokens, feats.grid)   # [2, 384, 14, 14]
    """

    def __init__(
        self,
        in_channels: int = 1,
        img_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout_rate: float = 0.0,
        out_indices: Sequence[int] | None = None,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        img_size = tuple(int(s) for s in ensure_tuple_rep(img_size, 2))
        if out_indices is None:
            out_indices = [round(num_layers * (i + 1) / 4) - 1 for i in range(4)] if num_layers >= 4 else range(num_layers)
        self.out_indices = tuple(sorted({int(i) for i in out_indices}))
        if any(not 0 <= i < num_layers for i in self.out_indices):
            raise ValueError(f"out_indices {self.out_indices} must be in [0, {num_layers})")
        self.network_args: dict[str, Any] = {
            "in_channels": in_channels, "img_size": list(img_size), "patch_size": patch_size, "hidden_size": hidden_size,
            "num_layers": num_layers, "num_heads": num_heads, "mlp_ratio": mlp_ratio, "qkv_bias": qkv_bias,
            "out_indices": list(self.out_indices),
        }  # the architecture, for self-describing exports (networks.record)
        self.in_channels, self.patch_size, self.embed_dim, self.num_layers = in_channels, patch_size, hidden_size, num_layers
        self.vit = ViT(
            in_channels=in_channels, img_size=img_size, patch_size=patch_size, hidden_size=hidden_size,
            mlp_dim=int(hidden_size * mlp_ratio), num_layers=num_layers, num_heads=num_heads, proj_type="conv",
            pos_embed_type="sincos", classification=False, dropout_rate=dropout_rate, spatial_dims=2, qkv_bias=qkv_bias,
        )
        freeze_unused_cross_attention(self.vit)
        rates = [drop_path_rate * i / max(num_layers - 1, 1) for i in range(num_layers)]
        self.drop_paths = nn.ModuleList(DropPath(r) if r > 0 else nn.Identity() for r in rates)
        self.native_grid = (img_size[0] // patch_size, img_size[1] // patch_size)
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}

    def grid(self, image_size: Sequence[int]) -> tuple[int, int]:
        """The patch grid ``(h, w)`` of an ``[H, W]`` image; raises if a side is not a multiple of the patch."""
        h, w = (int(s) for s in image_size[-2:])
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {(h, w)} must be divisible by the patch size {self.patch_size}")
        return h // self.patch_size, w // self.patch_size

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """Sin-cos position embedding ``[1, h * w, D]`` for ``grid`` (the stored one for the native grid)."""
        stored = self.vit.patch_embedding.position_embeddings
        if grid == self.native_grid:
            return stored
        if grid not in self._pos_cache:
            self._pos_cache[grid] = build_sincos_position_embedding(list(grid), self.embed_dim, 2).detach()
        return self._pos_cache[grid].to(stored.device, stored.dtype)

    def embed(
        self, images: torch.Tensor, mask: torch.Tensor | None = None, mask_token: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch tokens with position embedding.

        Args:
            images: ``[B, C, H, W]``, ``H`` and ``W`` multiples of the patch.
            mask: optional ``[B, h * w]`` bool: these patches' embeddings are replaced by ``mask_token`` ``[1, 1, D]``
                before the position embedding is added (SimMIM / BEiT style masking).

        Returns:
            ``(tokens [B, h * w, D], (h, w))``.
        """
        grid = self.grid(images.shape)
        tokens = self.vit.patch_embedding.patch_embeddings(images).flatten(2).transpose(1, 2)
        if mask is not None:
            tokens = torch.where(mask[..., None], mask_token.to(tokens.dtype), tokens)
        return self.vit.patch_embedding.dropout(tokens + self.position_embedding(grid)), grid

    def blocks(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the transformer blocks and the final norm on ``tokens [B, N, D]`` (all patches or a subset).

        Returns:
            ``(normed [B, N, D], hidden states of out_indices)``.
        """
        hidden = []
        for i, (block, drop) in enumerate(zip(self.vit.blocks, self.drop_paths)):
            # MONAI's TransformerBlock.forward (no cross-attention), with stochastic depth on both residual branches
            tokens = tokens + drop(block.attn(block.norm1(tokens)))
            tokens = tokens + drop(block.mlp(block.norm2(tokens)))
            if i in self.out_indices:
                hidden.append(tokens)
        return self.vit.norm(tokens), hidden

    def forward(self, images: torch.Tensor) -> ViTFeatures:
        """Encode ``images [B, C, H, W]``; see :class:`ViTFeatures`."""
        tokens, grid = self.embed(images)
        tokens, hidden = self.blocks(tokens)
        return ViTFeatures(tokens, tokens.mean(1), hidden, grid)

    @property
    def num_features(self) -> int:
        """Width ``D`` of the pooled features (as :attr:`VMamba.num_features`)."""
        return self.embed_dim

    @property
    def num_layer_ids(self) -> int:
        """Depth ids for layer-wise lr decay: 0 the embedding, 1..n the blocks, n + 1 the final norm."""
        return self.num_layers + 1

    def layer_id(self, name: str) -> int:
        """Depth id of parameter ``name`` (relative to this module) for layer-wise lr decay (BEiT's rule)."""
        parts = name.split(".")
        if parts[:2] == ["vit", "patch_embedding"]:
            return 0
        if parts[:2] == ["vit", "blocks"]:
            return int(parts[2]) + 1
        return self.num_layers + 1

    @staticmethod
    def feature_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Tokens ``[B, h * w, D]`` as a map ``[B, D, h, w]``."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


def vit_tiny(**kwargs: Any) -> ViTEncoder:
    """ViT-Ti/16: 192 wide, 12 blocks, 3 heads."""
    return ViTEncoder(**{"hidden_size": 192, "num_layers": 12, "num_heads": 3, **kwargs})


def vit_small(**kwargs: Any) -> ViTEncoder:
    """ViT-S/16: 384 wide, 12 blocks, 6 heads."""
    return ViTEncoder(**{"hidden_size": 384, "num_layers": 12, "num_heads": 6, **kwargs})


def vit_base(**kwargs: Any) -> ViTEncoder:
    """ViT-B/16: 768 wide, 12 blocks, 12 heads (USF-MAE's and USFM's encoder)."""
    return ViTEncoder(**{"hidden_size": 768, "num_layers": 12, "num_heads": 12, **kwargs})


VIT_PRESETS = {"vit_tiny": vit_tiny, "vit_small": vit_small, "vit_base": vit_base}


def build_vit(name: str | Mapping[str, Any] = "vit_base", in_channels: int = 1, **kwargs: Any) -> ViTEncoder:
    """A ViT encoder from a preset name (``vit_tiny``/``small``/``base``) or :class:`ViTEncoder` arguments
    (e.g. ``{"hidden_size": 32, "num_layers": 2, "num_heads": 2}`` for CPU tests); ``kwargs`` override both."""
    if isinstance(name, Mapping):
        return ViTEncoder(**{**name, "in_channels": in_channels, **kwargs})
    if name not in VIT_PRESETS:
        raise ValueError(f"unknown ViT {name!r}; choose from {sorted(VIT_PRESETS)} or pass ViTEncoder arguments")
    return VIT_PRESETS[name](in_channels=in_channels, **kwargs)
