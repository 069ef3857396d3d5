"""Losses of the pretraining methods (OpenUS, MAE, USFM)."""

from .frequency import spectrum_loss
from .ibot import CENTERINGS, IBOTLoss, sinkhorn_knopp
from .patches import masked_patch_loss, normalise_patches
from .reconstruction import masked_reconstruction_loss

__all__ = ["CENTERINGS", "IBOTLoss", "masked_patch_loss", "masked_reconstruction_loss", "normalise_patches", "sinkhorn_knopp", "spectrum_loss"]
