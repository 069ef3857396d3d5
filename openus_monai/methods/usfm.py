"""USFM (Jiao et al., Medical Image Analysis 2024): spatial-frequency dual masked image modelling on a ViT."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from ..losses.frequency import spectrum_loss
from ..networks.mim import MaskedImageModel
from ..networks.vit import ViTEncoder
from ..transforms.frequency import band_stop, random_bands
from ..transforms.patches import random_patch_mask, unpatchify
from .base import Autocast, PretrainingMethod

__all__ = ["LOSS_TERMS", "USFMMethod"]

LOSS_TERMS = ("spatial", "frequency_pixel", "frequency_band")


class USFMMethod(PretrainingMethod):
    """USFM's spatial-frequency dual masked image modelling, as its paper describes it (its pretraining code is not
    public), on one ViT encoder and one SimMIM-style pixel head shared by two branches:

    - spatial branch (noise addition-recovery): Gaussian noise of std ``noise_std`` is added to the image and
      ``mask_ratio`` of its patches are replaced by a mask token; the model must give back the clean image
      (masked patches recovered, visible ones denoised). Term ``spatial``: pixel mean squared error to the clean image.
    - frequency branch (band-stop masking): a random radial band of frequencies (width in ``band_width`` cycles
      per pixel) is removed in the Fourier domain; the model must restore the clean image. Terms
      ``frequency_pixel`` (pixel mean squared error) and ``frequency_band`` (the spectra's mean error modulus on
      the removed band, orthonormal FFT): a loss in each domain.

    Both branches run in one forward pass (concatenated along the batch). Batches: ``image [B, C, H, W]``.
    The random draws come from torch's global generator (reseeded by the engine at every iteration).

    Args:
        encoder: the :class:`~openus_monai.networks.ViTEncoder` to pretrain (exported).
        mask_ratio: share of patches masked in the spatial branch.
        noise_std: std of the added Gaussian noise (images scaled to [0, 1]).
        band_width: ``(min, max)`` width of the removed band, cycles per pixel (see
            :func:`~openus_monai.transforms.random_bands`).
        loss_weights: weights of ``spatial``, ``frequency_pixel``, ``frequency_band`` (default 1 each).
    """

    required_keys = ("image",)

    def __init__(
        self,
        encoder: ViTEncoder,
        mask_ratio: float = 0.6,
        noise_std: float = 0.1,
        band_width: Sequence[float] = (0.05, 0.15),
        loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        unknown = set(loss_weights or {}) - set(LOSS_TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; USFM has {LOSS_TERMS}")
        self.student = MaskedImageModel(encoder)
        self.mask_ratio, self.noise_std, self.band_width = mask_ratio, noise_std, (float(band_width[0]), float(band_width[1]))
        self.loss_weights = dict.fromkeys(LOSS_TERMS, 1.0) | dict(loss_weights or {})

    @property
    def export_encoder(self) -> torch.nn.Module:
        return self.student.encoder

    def corrupt(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The two branches' inputs and targets for clean ``images [B, C, H, W]``.

        Returns:
            ``spatial_input`` (noisy), ``spatial_mask [B, L]`` (masked patches), ``spatial_target`` (the clean image),
            ``frequency_input`` (band-stopped), ``band_mask`` ``[B, 1, H, W]`` (1 = frequency kept),
            ``frequency_target`` (the clean image).
        """
        size = images.shape[0]
        grid = self.student.encoder.grid(images.shape)
        mask, _ = random_patch_mask(size, grid[0] * grid[1], self.mask_ratio, images.device)
        noise = torch.randn(images.shape).to(images.device, images.dtype)  # drawn on the CPU: same on every device
        low, high = random_bands(size, self.band_width)
        filtered, band_mask = band_stop(images, low.to(images.device), high.to(images.device))
        return {
            "spatial_input": images + self.noise_std * noise,
            "spatial_mask": mask,
            "spatial_target": images,
            "frequency_input": filtered,
            "band_mask": band_mask,
            "frequency_target": images,
        }

    def forward(
        self, batch: Mapping[str, torch.Tensor], schedule: Mapping[str, float], autocast: Autocast = nullcontext
    ) -> dict[str, Any]:
        images = batch["image"]
        images = images.as_tensor() if hasattr(images, "as_tensor") else images
        size, grid = images.shape[0], self.student.encoder.grid(images.shape)
        views = self.corrupt(images)
        inputs = torch.cat([views["spatial_input"], views["frequency_input"]])
        masks = torch.cat([views["spatial_mask"], torch.zeros_like(views["spatial_mask"])])
        with autocast():
            patches = self.run_student(inputs, masks)
        restored = unpatchify(patches.float(), grid, images.shape[1])
        spatial, frequency = restored[:size], restored[size:]
        terms = {
            "spatial": F.mse_loss(spatial, views["spatial_target"].float()),
            "frequency_pixel": F.mse_loss(frequency, views["frequency_target"].float()),
            "frequency_band": spectrum_loss(frequency, views["frequency_target"], weight=1.0 - views["band_mask"]),
        }
        pictures = {
            "view": images[:1].detach().float().cpu(),
            "noisy_masked": views["spatial_input"][:1].detach().float().cpu(),
            "band_stopped": views["frequency_input"][:1].detach().float().cpu(),
            "reconstruction": spatial[:1].detach().cpu(),
            "restored": frequency[:1].detach().cpu(),
        }
        return {"loss": sum(self.loss_weights[k] * v for k, v in terms.items()), **{f"loss_{k}": v for k, v in terms.items()}, "images": pictures}
