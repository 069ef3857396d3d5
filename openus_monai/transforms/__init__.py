"""MONAI dictionary transforms for OpenUS: multi-view crops and block masks."""

from .frequency import band_stop, band_stop_mask, radial_frequency, random_bands
from .masking import RandomBlockMaskd, cell_masks_to_tokens, random_block_mask, token_grid
from .multiview import MultiViewCropd, ViewAugmentation, sample_crop_box
from .patches import masked_count, patchify, random_patch_mask, unpatchify

__all__ = [
    "MultiViewCropd",
    "RandomBlockMaskd",
    "ViewAugmentation",
    "band_stop",
    "band_stop_mask",
    "cell_masks_to_tokens",
    "masked_count",
    "patchify",
    "radial_frequency",
    "random_bands",
    "random_block_mask",
    "random_patch_mask",
    "sample_crop_box",
    "token_grid",
    "unpatchify",
]
