"""The four-direction cross scan of SS2D and its inverse (cross merge)."""

from __future__ import annotations

import torch

__all__ = ["cross_merge", "cross_scan", "direction_orders"]


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """Unfold a map into 4 sequences: row-major, column-major, and both reversed.

    Args:
        x: ``[B, D, H, W]``.

    Returns:
        ``[B, 4, D, H*W]``.
    """
    rows = x.flatten(2)
    cols = x.transpose(2, 3).flatten(2)
    forward = torch.stack([rows, cols], dim=1)
    return torch.cat([forward, forward.flip(-1)], dim=1)


def cross_merge(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Sum the 4 direction outputs back in row-major token order (adjoint of :func:`cross_scan`).

    Args:
        y: ``[B, 4, D, H*W]``.

    Returns:
        ``[B, D, H, W]``.
    """
    y = y[:, :2] + y[:, 2:].flip(-1)
    batch, _, dim, _ = y.shape
    cols = y[:, 1].view(batch, dim, width, height).transpose(2, 3)
    return y[:, 0].view(batch, dim, height, width) + cols


def direction_orders(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """Token index (row-major) visited at each sequence position, per direction: ``[4, H*W]``."""
    tokens = torch.arange(height * width, device=device).view(height, width)
    rows, cols = tokens.flatten(), tokens.t().flatten()
    return torch.stack([rows, cols, rows.flip(0), cols.flip(0)])
