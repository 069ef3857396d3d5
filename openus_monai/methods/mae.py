"""USF-MAE: a masked autoencoder (He et al. 2022) on a ViT, as USF-MAE (Megahed et al. 2026) pretrains on ultrasound."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import torch

from ..losses.patches import masked_patch_loss
from ..networks.mim import MaskedAutoencoder
from ..networks.vit import ViTEncoder
from ..transforms.patches import patchify, random_patch_mask, unpatchify
from .base import Autocast, PretrainingMethod

__all__ = ["MAEMethod"]


class MAEMethod(PretrainingMethod):
    """MAE with its standard settings: per image, ``round(mask_ratio * L)`` of the ``L`` patches chosen by sorting
    uniform noise are removed, the ViT encodes the rest, a light decoder predicts every patch's pixels, and the
    loss is the mean squared error on the masked patches only, against per-patch normalised pixels
    (``norm_pix_loss``). One term, ``loss_rec``; no teacher.

    Batches: ``image [B, C, H, W]`` (H, W multiples of the patch). The masks come from torch's global generator,
    which :class:`~openus_monai.engines.PretrainingEngine` reseeds at every iteration with ``deterministic_seed``.

    Args:
        encoder: the :class:`~openus_monai.networks.ViTEncoder` to pretrain (exported).
        mask_ratio: share of patches masked (MAE: 0.75).
        norm_pix_loss: regress per-patch normalised pixels (MAE: True).
        decoder_size, decoder_layers, decoder_heads: the decoder (MAE: 512, 8, 16).
    """

    required_keys = ("image",)

    def __init__(
        self,
        encoder: ViTEncoder,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        decoder_size: int = 512,
        decoder_layers: int = 8,
        decoder_heads: int = 16,
    ) -> None:
        super().__init__()
        self.student = MaskedAutoencoder(encoder, decoder_size, decoder_layers, decoder_heads)
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss

    @property
    def export_encoder(self) -> torch.nn.Module:
        return self.student.encoder

    def forward(
        self, batch: Mapping[str, torch.Tensor], schedule: Mapping[str, float], autocast: Autocast = nullcontext
    ) -> dict[str, Any]:
        images = batch["image"]
        images = images.as_tensor() if hasattr(images, "as_tensor") else images
        grid = self.student.encoder.grid(images.shape)
        mask, keep = random_patch_mask(images.shape[0], grid[0] * grid[1], self.mask_ratio, images.device)
        with autocast():
            prediction = self.run_student(images, keep)
        target = patchify(images, self.student.encoder.patch_size)
        loss = masked_patch_loss(prediction, target, mask, self.norm_pix_loss)
        return {"loss": loss, "loss_rec": loss, "images": self._pictures(images[:1], prediction[:1], target[:1], mask[:1], grid)}

    def _pictures(self, image: torch.Tensor, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The first image and its reconstruction (visible patches as given, masked ones predicted, in pixels)."""
        prediction = prediction.detach().float()
        if self.norm_pix_loss:  # back to pixels with the target patches' own statistics
            target = target.float()
            prediction = prediction * (target.var(-1, keepdim=True) + 1e-6).sqrt() + target.mean(-1, keepdim=True)
        patches = torch.where(mask[..., None], prediction, target.float())
        return {"view": image.detach().float().cpu(), "reconstruction": unpatchify(patches, grid, image.shape[1]).cpu()}
