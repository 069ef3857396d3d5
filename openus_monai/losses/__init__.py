"""Losses of OpenUS pretraining."""

from .ibot import IBOTLoss
from .reconstruction import masked_reconstruction_loss

__all__ = ["IBOTLoss", "masked_reconstruction_loss"]
