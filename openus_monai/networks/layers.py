"""Channel-first building blocks shared by the encoder, decoder and heads, and :func:`plain_tensor`."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.data import MetaTensor

__all__ = ["LayerNorm2d", "Linear2d", "Mlp2d", "init_linear_and_norm", "plain_tensor"]


def plain_tensor(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a plain ``torch.Tensor`` (same storage and autograd graph), e.g. from a MONAI ``MetaTensor``.

    The networks strip metadata on entry: inside the scans it serves no purpose, and a batched
    ``MetaTensor`` would slice its metadata along with every index operation.

    Only a ``MetaTensor`` is converted: other subclasses (e.g. the fake tensors of ``torch.export``, which a
    conversion would turn into a constant of the exported program) pass through as they are.
    """
    return x.as_tensor() if isinstance(x, MetaTensor) else x


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``[B, C, H, W]`` map (parameters ``weight``/``bias`` ``[C]``).

    On a channel-last map (``torch.channels_last``) the permutes are views and the result is channel-last.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Linear2d(nn.Linear):
    """A 1x1 convolution on ``[B, C, H, W]`` with a linear layer's ``[out, in]`` weight (checkpoint-compatible).

    Computed as a matrix product, whose forward and backward are plain GEMMs (faster on the CPU than a 1x1
    convolution's backward): on a channel-last map one ``[B*H*W, C_in] x [C_in, C_out]`` GEMM with a
    channel-last result (no copies), otherwise one ``[C_out, C_in] x [C_in, H*W]`` product per image.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous(memory_format=torch.channels_last):
            return F.linear(x.permute(0, 2, 3, 1), self.weight, self.bias).permute(0, 3, 1, 2)
        batch, channels, height, width = x.shape
        y = torch.matmul(self.weight, x.reshape(batch, channels, height * width)).view(batch, -1, height, width)
        return y if self.bias is None else y + self.bias[:, None, None]


class Mlp2d(nn.Module):
    """``fc2(GELU(fc1(x)))`` on ``[B, C, H, W]``, hidden width ``ratio * C``."""

    def __init__(self, channels: int, ratio: float = 4.0, drop: float = 0.0) -> None:
        super().__init__()
        hidden = int(channels * ratio)
        self.fc1 = Linear2d(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear2d(hidden, channels)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def init_linear_and_norm(module: nn.Module) -> None:
    """VMamba's initialisation, for ``model.apply``: linear (and :class:`Linear2d`) weights truncated-normal
    with std 0.02 and zero bias; LayerNorms to identity. SS2D re-initialises its own SSM tensors."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
