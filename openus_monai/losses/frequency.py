"""A loss in the Fourier domain (USFM's frequency-domain reconstruction term)."""

from __future__ import annotations

import torch

__all__ = ["spectrum_loss"]


def spectrum_loss(prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean modulus of the difference of the 2-D spectra (orthonormal FFT, so its scale matches the pixels').

    Args:
        prediction, target: ``[B, C, H, W]``.
        weight: optional ``[H, W]`` or ``[B, 1, H, W]`` weights of the frequency bins (e.g. ``1 - band_stop_mask``
            to score only the removed band); the mean is then weighted.

    Returns:
        a 0-dim float32 tensor.
    """
    diff = torch.fft.fft2(prediction.float(), norm="ortho") - torch.fft.fft2(target.float(), norm="ortho")
    modulus = diff.abs()
    if weight is None:
        return modulus.mean()
    weight = weight.float().expand_as(modulus)
    return (modulus * weight).sum() / weight.sum().clamp_min(1.0)
