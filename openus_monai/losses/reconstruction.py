"""Masked pixel reconstruction loss with a per-cell loss map (the student's "loss prior")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["masked_reconstruction_loss"]


def masked_reconstruction_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared error over the masked pixels, and the loss of every mask cell.

    Args:
        prediction: reconstructed pixels ``[B, C, H, W]``.
        target: the input view ``[B, C, H, W]``.
        mask: masked cells ``[B, h, w]`` bool, ``H / h`` = ``W / w`` = the cell size.

    Returns:
        ``loss``: sum of squared errors over masked pixels and channels / masked pixel count / ``C``
        (0 when nothing is masked); ``cell_loss [B, h, w]``: the channel-mean squared error averaged
        over each cell, zero where unmasked (detached).
    """
    cell = target.shape[-1] // mask.shape[-1]
    squared = (prediction.float() - target.float()).square().mean(1, keepdim=True)  # [B, 1, H, W]
    pixel_mask = mask[:, None].float().repeat_interleave(cell, -2).repeat_interleave(cell, -1)
    loss = (squared * pixel_mask).sum() / pixel_mask.sum().clamp_min(1.0)
    cell_loss = F.avg_pool2d(squared.detach(), cell)[:, 0] * mask.float()
    return loss, cell_loss
