"""The VMamba encoder as ``torch.jit.script`` compiles it.

``VMamba.forward`` serves training too (masks, teacher attention, gradient checkpointing) and names its
output norms ``outnorm0..3`` (the original checkpoints' keys), which TorchScript cannot index by a loop
variable. :meth:`VMamba.__prepare_scriptable__` hands the compiler this module instead: the same submodules
(no copies of the weights), the four maps only. Inside, every SS2D runs its loop-free scan
(:func:`~openus_monai.networks.ops.scan_graph.selective_scan_graph`), so the scripted model takes any height
and width divisible by 32.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ScriptableVMamba"]


class ScriptableVMamba(nn.Module):
    """``[B, in_channels, H, W]`` -> the four stage maps of a :class:`~openus_monai.networks.VMamba`.

    Args:
        encoder: the VMamba whose stem, stages and output norms this module runs (shared, not copied).
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.in_channels = int(encoder.in_channels)
        self.patch_embed = encoder.patch_embed
        self.layers = encoder.layers
        self.outnorms = nn.ModuleList([getattr(encoder, f"outnorm{i}") for i in range(len(encoder.layers))])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args:
            x: ``[B, in_channels, H, W]``, H and W divisible by 32.

        Returns:
            four maps ``[B, C_i, H / 2^(i+2), W / 2^(i+2)]``.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[2] % 32 != 0 or x.shape[3] % 32 != 0:
            raise ValueError(
                "VMamba expects [B, " + str(self.in_channels) + ", H, W] with H and W divisible by 32, got "
                + str(list(x.shape))
            )
        x = self.patch_embed(x)
        maps: list[torch.Tensor] = []
        for stage, norm in zip(self.layers, self.outnorms):
            x = stage.blocks(x)
            maps.append(norm(x))
            x = stage.downsample(x)
        return maps
