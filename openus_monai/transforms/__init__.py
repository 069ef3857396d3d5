"""MONAI dictionary transforms for OpenUS: multi-view crops and block masks."""

from .masking import RandomBlockMaskd, random_block_mask
from .multiview import MultiViewCropd, ViewAugmentation, sample_crop_box

__all__ = ["MultiViewCropd", "RandomBlockMaskd", "ViewAugmentation", "random_block_mask", "sample_crop_box"]
