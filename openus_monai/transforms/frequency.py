"""Fourier-domain corruptions of USFM's frequency branch: radial band-stop masks (functions on batched tensors)."""

from __future__ import annotations

import torch

__all__ = ["band_stop", "band_stop_mask", "radial_frequency", "random_bands"]


def radial_frequency(size: tuple[int, int], device: torch.device | str | None = None) -> torch.Tensor:
    """``[H, W]``: the radius ``sqrt(fy^2 + fx^2)`` of every ``torch.fft.fft2`` bin, in cycles per pixel
    (unshifted layout; 0 at DC, 0.5 at the Nyquist frequency of an axis, up to ``sqrt(0.5)`` in the corners)."""
    fy = torch.fft.fftfreq(size[0], device=device)
    fx = torch.fft.fftfreq(size[1], device=device)
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def band_stop_mask(size: tuple[int, int], low: torch.Tensor | float, high: torch.Tensor | float, device: torch.device | str | None = None) -> torch.Tensor:
    """Radial band-stop mask in the (unshifted) Fourier domain: 0 where ``low <= radius < high``, 1 elsewhere.

    Args:
        size: ``(H, W)``.
        low, high: band edges in cycles per pixel: floats, or ``[B]`` tensors for one band per image.

    Returns:
        ``[H, W]`` for float edges, ``[B, 1, H, W]`` for tensor edges (float32).
    """
    radius = radial_frequency(size, device)
    if isinstance(low, torch.Tensor) or isinstance(high, torch.Tensor):
        low = torch.as_tensor(low, device=radius.device).reshape(-1, 1, 1, 1)
        high = torch.as_tensor(high, device=radius.device).reshape(-1, 1, 1, 1)
    return (~((radius >= low) & (radius < high))).float()


def band_stop(images: torch.Tensor, low: torch.Tensor | float, high: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove the frequencies with radius in ``[low, high)`` from ``images [B, C, H, W]`` (float32 FFT).

    Returns:
        ``(filtered [B, C, H, W], mask)``, the mask as :func:`band_stop_mask` (1 = kept); ``filtered`` is real
        because the mask is symmetric under ``f -> -f``.
    """
    mask = band_stop_mask(images.shape[-2:], low, high, images.device)
    spectrum = torch.fft.fft2(images.float())
    return torch.fft.ifft2(spectrum * mask).real.to(images.dtype), mask


def random_bands(
    batch: int, width: tuple[float, float] = (0.05, 0.15), lowest: float = 0.01, highest: float = 0.5, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random band per image: a width uniform in ``width``, then a lower edge uniform in
    ``[lowest, highest - width]`` (``lowest > 0`` keeps the mean intensity, the DC bin).

    Returns:
        ``(low [B], high [B])`` in cycles per pixel.
    """
    w = width[0] + (width[1] - width[0]) * torch.rand(batch, generator=generator)
    low = lowest + (highest - w - lowest).clamp_min(0) * torch.rand(batch, generator=generator)
    return low, low + w
