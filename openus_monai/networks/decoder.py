"""The channel-aware Mamba decoder of OpenUS: SS2D + channel-attention blocks over a U-shaped path."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers import DropPath

from .layers import LayerNorm2d, Linear2d, init_linear_and_norm
from .ss2d import SS2D

__all__ = ["ChannelAttention", "ChannelAttentionBlock", "MambaDecoder", "MambaDecoderBlock", "PatchExpand"]


class ChannelAttention(nn.Module):
    """Squeeze-excite-style channel attention from average *and* max pooling (CBAM's channel branch).

    ``x * sigmoid(mlp(avgpool(x)) + mlp(maxpool(x)))`` with one shared two-layer 1x1 MLP.

    Args:
        channels: channels ``C`` of the ``[B, C, H, W]`` input.
        reduction: hidden width of the MLP is ``max(C // reduction, 4)``.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H, W]``."""
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(avg + mx)


class ChannelAttentionBlock(nn.Module):
    """3x3 conv -> GELU -> 3x3 conv -> :class:`ChannelAttention` (the decoder block's channel branch).

    Args:
        channels: channels in and out.
        compress: the middle width is ``max(channels // compress, 1)``.
        reduction: see :class:`ChannelAttention`.
    """

    def __init__(self, channels: int, compress: int = 3, reduction: int = 16) -> None:
        super().__init__()
        mid = max(channels // compress, 1)
        self.body = nn.Sequential(
            nn.Conv2d(channels, mid, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(mid, channels, 3, padding=1),
            ChannelAttention(channels, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H, W]``."""
        return self.body(x)


class MambaDecoderBlock(nn.Module):
    """One channel-aware Mamba decoder block.

    ``x = s1 * x + drop_path(SS2D(norm1(x)))`` then ``x = s2 * x + drop_path(CAB(norm2(x)))``, where
    ``s1, s2`` are learnable per-channel scales of the residual path (initialised to 1) and CAB is a
    :class:`ChannelAttentionBlock`.

    Args:
        dim: channels ``C``.
        drop_path: stochastic depth rate of both branches.
        compress, reduction: see :class:`ChannelAttentionBlock`.
        ss2d_kwargs: passed to :class:`~openus_monai.networks.SS2D` (``d_state``, ``ssm_ratio``, ``scan_backend``...).
    """

    def __init__(self, dim: int, drop_path: float = 0.0, compress: int = 3, reduction: int = 16, **ss2d_kwargs) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.ss2d = SS2D(dim, **ss2d_kwargs)
        self.skip_scale1 = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.norm2 = LayerNorm2d(dim)
        self.cab = ChannelAttentionBlock(dim, compress, reduction)
        self.skip_scale2 = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H, W]``."""
        x = self.skip_scale1 * x + self.drop_path(self.ss2d(self.norm1(x)))
        return self.skip_scale2 * x + self.drop_path(self.cab(self.norm2(x)))


class PatchExpand(nn.Module):
    """Upsample by ``scale`` with a 1x1 linear expansion and a pixel shuffle, then LayerNorm (Swin-UNet style).

    ``[B, C_in, H, W] -> [B, C_out, scale * H, scale * W]``.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        scale: upsampling factor.
    """

    def __init__(self, in_channels: int, out_channels: int, scale: int = 2) -> None:
        super().__init__()
        self.expand = Linear2d(in_channels, out_channels * scale * scale, bias=False)
        self.shuffle = nn.PixelShuffle(scale)
        self.norm = LayerNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.shuffle(self.expand(x)))


class MambaDecoder(nn.Module):
    """Channel-aware Mamba decoder (OpenUS): four encoder maps (strides 4-32) to per-pixel logits.

    Data flow, for encoder channels ``C_0..C_3``::

        f3 [C_3, H/32] -> PatchExpand x2 -> [C_2, H/16]
        + f2 -> depths[0] blocks -> PatchExpand x2 -> [C_1, H/8]
        + f1 -> depths[1] blocks -> PatchExpand x2 -> [C_0, H/4]
        + f0 -> depths[2] blocks -> PatchExpand x4 -> [C_0, H] -> 1x1 conv -> [num_classes, H]

    Each block is a :class:`MambaDecoderBlock` (SS2D branch, then channel-attention branch, both with
    learnable residual scales). Stochastic depth rises linearly from 0 (deepest block) to
    ``drop_path_rate`` (last block).

    Args:
        encoder_dims: channels of the four encoder maps, shallow to deep (e.g. ``VMamba.dims``).
        num_classes: output channels (logits, background included).
        depths: decoder blocks at strides 16, 8, 4; an int for the same number at each.
        drop_path_rate: stochastic depth of the last block.
        d_state, ssm_ratio: SS2D settings of the decoder blocks.
        compress, reduction: channel-attention settings (see :class:`ChannelAttentionBlock`).
        scan_backend: force a selective-scan backend (default: automatic).

    Example::

        enc = VMamba(depths=(1, 1, 1, 1), dims=16, in_channels=1)
        dec = MambaDecoder(enc.dims, num_classes=2)
        logits = dec(enc(torch.randn(2, 1, 64, 64)))     # [2, 2, 64, 64]
    """

    def __init__(
        self,
        encoder_dims: Sequence[int],
        num_classes: int = 2,
        depths: int | Sequence[int] = 2,
        drop_path_rate: float = 0.1,
        d_state: int = 1,
        ssm_ratio: float = 2.0,
        compress: int = 3,
        reduction: int = 16,
        scan_backend: str | None = None,
    ) -> None:
        super().__init__()
        dims = [int(d) for d in encoder_dims]
        if len(dims) != 4:
            raise ValueError(f"MambaDecoder needs the channels of 4 encoder maps, got {dims}")
        depths = [int(depths)] * 3 if isinstance(depths, int) else [int(d) for d in depths]
        if len(depths) != 3 or min(depths) < 0:
            raise ValueError(f"depths must be an int or 3 non-negative ints (strides 16, 8, 4), got {depths}")
        self.encoder_dims, self.depths, self.num_classes = tuple(dims), tuple(depths), num_classes
        rates = torch.linspace(0, drop_path_rate, max(sum(depths), 1)).tolist()
        self.expand_first = PatchExpand(dims[3], dims[2], 2)
        stages, upsamples, start = [], [], 0
        for level, depth in zip((2, 1, 0), depths):
            blocks = [
                MambaDecoderBlock(
                    dims[level], rates[start + j], compress, reduction, d_state=d_state, ssm_ratio=ssm_ratio, scan_backend=scan_backend
                )
                for j in range(depth)
            ]
            start += depth
            stages.append(nn.Sequential(*blocks))
            upsamples.append(PatchExpand(dims[level], dims[level - 1], 2) if level > 0 else PatchExpand(dims[0], dims[0], 4))
        self.stages = nn.ModuleList(stages)
        self.upsamples = nn.ModuleList(upsamples)
        self.head = nn.Conv2d(dims[0], num_classes, 1)
        self.apply(init_linear_and_norm)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Args:
            features: four maps ``[B, C_i, H / 2^(i+2), W / 2^(i+2)]``, shallow to deep (the encoder's output).

        Returns:
            logits ``[B, num_classes, H, W]``.
        """
        if torch.jit.is_scripting():
            return self._decode(features)
        if len(features) != 4:
            raise ValueError(f"MambaDecoder expects 4 feature maps, got {len(features)}")
        for i, (f, c) in enumerate(zip(features, self.encoder_dims)):
            if f.ndim != 4 or f.shape[1] != c:
                raise ValueError(f"feature map {i} must be [B, {c}, h, w], got {list(f.shape)}")
        return self._decode(list(features))  # any sequence of 4 maps in eager mode

    def _decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """:meth:`forward` without the checks (what a scripted model runs)."""
        x = self.expand_first(features[3])
        for i, (stage, up) in enumerate(zip(self.stages, self.upsamples)):
            x = up(stage(x + features[2 - i]))  # levels 2, 1, 0
        return self.head(x)
