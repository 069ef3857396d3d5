"""MONAI dictionary transforms for OpenUS: grayscale 2D images, segmentation masks, multi-view crops and block masks."""

from .grayscale import EnsureGray2Dd, to_gray_2d
from .masking import RandomBlockMaskd, cell_masks_to_tokens, random_block_mask, token_grid
from .multiview import MultiViewCropd, ViewAugmentation, sample_crop_box
from .seg_masks import CheckSegPaird, SaveSegMaskd

__all__ = [
    "CheckSegPaird",
    "EnsureGray2Dd",
    "MultiViewCropd",
    "RandomBlockMaskd",
    "SaveSegMaskd",
    "ViewAugmentation",
    "cell_masks_to_tokens",
    "random_block_mask",
    "sample_crop_box",
    "to_gray_2d",
    "token_grid",
]
