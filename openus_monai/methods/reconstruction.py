"""Plain masked pixel reconstruction: the smallest pretraining method (a SimMIM-like baseline, no teacher)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import torch

from ..losses.reconstruction import masked_reconstruction_loss
from ..networks.pretrain import ReconstructionStudent
from ..networks.vmamba import VMamba
from .base import Autocast, PretrainingMethod

__all__ = ["MaskedReconstructionMethod"]


class MaskedReconstructionMethod(PretrainingMethod):
    """Mask a random ``mask_ratio`` of the cells of each image, encode, and regress the masked pixels.

    Batches: ``image [B, C, H, W]`` (H, W multiples of ``mask_cell``). The masks are drawn from torch's global
    generator, which :class:`~openus_monai.engines.PretrainingEngine` reseeds at every iteration with
    ``deterministic_seed``, so a resumed run draws the same masks. One term, ``loss_rec``.

    Args:
        encoder: the :class:`~openus_monai.networks.VMamba` to pretrain.
        mask_ratio: fraction of cells masked (exactly ``ceil(ratio * cells)`` per image).
        mask_cell: cell size in pixels.
    """

    required_keys = ("image",)

    def __init__(self, encoder: VMamba, mask_ratio: float = 0.6, mask_cell: int = 32) -> None:
        super().__init__()
        if not 0 < mask_ratio <= 1:
            raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio}")
        self.student = ReconstructionStudent(encoder)
        self.mask_ratio, self.mask_cell = mask_ratio, mask_cell

    @property
    def export_encoder(self) -> torch.nn.Module:
        return self.student.encoder

    def random_masks(self, size: int, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        """``[size, h, w]`` bool with exactly ``ceil(mask_ratio * h * w)`` cells set in each."""
        cells = grid[0] * grid[1]
        chosen = torch.rand(size, cells).topk(math.ceil(self.mask_ratio * cells), dim=1).indices
        return torch.zeros(size, cells, dtype=torch.bool).scatter_(1, chosen, True).view(size, *grid).to(device)

    def forward(
        self, batch: Mapping[str, torch.Tensor], schedule: Mapping[str, float], autocast: Autocast = nullcontext
    ) -> dict[str, Any]:
        images = batch["image"]
        images = images.as_tensor() if hasattr(images, "as_tensor") else images
        masks = self.random_masks(images.shape[0], (images.shape[-2] // self.mask_cell, images.shape[-1] // self.mask_cell), images.device)
        with autocast():
            reconstruction = self.run_student(images, masks)
        loss, _ = masked_reconstruction_loss(reconstruction, images, masks)
        images_out = {"view": images[:1].detach().float().cpu(), "reconstruction": reconstruction[:1].detach().float().cpu()}
        return {"loss": loss, "loss_rec": loss, "images": images_out}
