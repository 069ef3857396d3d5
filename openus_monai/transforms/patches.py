"""Patch tokens of an image and MAE's random patch masking (functions on batched tensors)."""

from __future__ import annotations

import torch

__all__ = ["masked_count", "patchify", "random_patch_mask", "unpatchify"]


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Non-overlapping ``patch x patch`` patches, row-major, as MAE's targets.

    Args:
        images: ``[B, C, H, W]``, ``H`` and ``W`` multiples of ``patch``.

    Returns:
        ``[B, L, patch * patch * C]`` with ``L = (H / patch) * (W / patch)``; each row is one patch, pixel-major
        then channel (``(p, q, c)``).
    """
    b, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {(h, w)} must be divisible by the patch size {patch}")
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: torch.Tensor, grid: tuple[int, int], channels: int = 1) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``[B, h * w, p * p * C]`` -> ``[B, C, h * p, w * p]``."""
    b, length, size = patches.shape
    patch = int(round((size // channels) ** 0.5))
    if length != grid[0] * grid[1] or patch * patch * channels != size:
        raise ValueError(f"{tuple(patches.shape)} patches do not fit a {grid} grid of {channels}-channel square patches")
    x = patches.reshape(b, grid[0], grid[1], patch, patch, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, grid[0] * patch, grid[1] * patch)


def masked_count(length: int, ratio: float) -> int:
    """Patches masked out of ``length``: ``round(ratio * length)``, at least 1 and at most ``length - 1``
    (MAE keeps ``int(length * (1 - ratio))``; the two agree whenever ``ratio * length`` is an integer)."""
    if not 0 < ratio < 1:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
    return min(max(int(round(ratio * length)), 1), length - 1)


def random_patch_mask(
    batch: int, length: int, ratio: float, device: torch.device | str | None = None, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """MAE's per-sample random masking by sorting uniform noise: exactly :func:`masked_count` patches per image.

    Args:
        batch: images.
        length: patches per image ``L``.
        ratio: share to mask.
        device: where the outputs go (the noise is drawn on the CPU, so a seed gives the same masks everywhere).
        generator: random generator (default: torch's global one).

    Returns:
        ``mask [B, L]`` bool (True = masked, removed from the encoder's input) and ``keep [B, L - n]`` long, the
        indices of the visible patches in increasing order.
    """
    n_masked = masked_count(length, ratio)
    noise = torch.rand(batch, length, generator=generator)
    keep = noise.argsort(dim=1)[:, : length - n_masked].sort(dim=1).values
    mask = torch.ones(batch, length, dtype=torch.bool).scatter_(1, keep, False)
    return mask.to(device), keep.to(device)
