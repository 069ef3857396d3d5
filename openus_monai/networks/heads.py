"""Pretraining heads: the iBOT projection head and the pixel-reconstruction head."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["IBOTHead", "ReconstructionHead"]


def _prototypes(bottleneck: int, out_dim: int, norm_last_layer: bool) -> nn.Module:
    layer = weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
    layer.parametrizations.weight.original0.data.fill_(1.0)
    if norm_last_layer:
        layer.parametrizations.weight.original0.requires_grad_(False)
    return layer


class IBOTHead(nn.Module):
    """MLP (``in -> hidden -> hidden -> bottleneck``, GELU), L2 normalisation, weight-normalised prototypes.

    The student keeps separate prototypes for the class token (``last_layer``) and the patch tokens
    (``last_layer2``); the teacher shares one (``separate_patch_layer=False``), so an EMA by parameter
    name feeds the teacher's prototypes from the student's class prototypes.

    Args:
        in_dim: token width ``C``.
        out_dim: number of prototypes ``K``.
        hidden_dim, bottleneck_dim: MLP widths.
        separate_patch_layer: own prototypes for patch tokens.
        norm_last_layer: fix the prototypes' weight-norm gain to 1.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 8192,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        separate_patch_layer: bool = True,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim)
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = _prototypes(bottleneck_dim, out_dim, norm_last_layer)
        self.last_layer2 = _prototypes(bottleneck_dim, out_dim, norm_last_layer) if separate_patch_layer else None

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens [B, 1 + L, C]`` -> class logits ``[B, K]`` and patch logits ``[B, L, K]``."""
        z = F.normalize(self.mlp(tokens), dim=-1)
        cls = self.last_layer(z[:, 0])
        patch = (self.last_layer2 or self.last_layer)(z[:, 1:])
        return cls, patch


class ReconstructionHead(nn.Module):
    """Pixels from the last-stage map: 1x1 conv to ``stride^2 * C_out`` channels, then PixelShuffle.

    ``[B, C_3, H / stride, W / stride] -> [B, out_channels, H, W]``; the original's ``decoder.0``.
    """

    def __init__(self, in_dim: int, out_channels: int = 3, stride: int = 32) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_dim, stride * stride * out_channels, kernel_size=1)
        self.shuffle = nn.PixelShuffle(stride)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.proj(feature_map))
