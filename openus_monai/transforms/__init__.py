"""MONAI dictionary transforms for OpenUS: multi-view crops and block masks."""

from .masking import RandomBlockMaskd, cell_masks_to_tokens, random_block_mask, token_grid
from .multiview import MultiViewCropd, ViewAugmentation, sample_crop_box

__all__ = ["MultiViewCropd", "RandomBlockMaskd", "ViewAugmentation", "cell_masks_to_tokens", "random_block_mask", "sample_crop_box", "token_grid"]
