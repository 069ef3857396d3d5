"""MONAI dictionary transforms for OpenUS: grayscale 2D images, segmentation masks, multi-view crops, block and
patch masks, Fourier band-stop masks."""

from .frequency import band_stop, band_stop_mask, radial_frequency, random_bands
from .grayscale import EnsureGray2Dd, to_gray_2d
from .masking import RandomBlockMaskd, cell_masks_to_tokens, random_block_mask, token_grid
from .multiview import MultiViewCropd, ViewAugmentation, sample_crop_box
from .patches import masked_count, patchify, random_patch_mask, unpatchify
from .seg_masks import CheckSegPaird, SaveSegMaskd

__all__ = [
    "CheckSegPaird",
    "EnsureGray2Dd",
    "MultiViewCropd",
    "RandomBlockMaskd",
    "SaveSegMaskd",
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
    "to_gray_2d",
    "token_grid",
    "unpatchify",
]
