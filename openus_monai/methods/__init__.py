"""Pretraining methods: each owns its networks, its losses, its teacher update and its state, and runs
through the generic :class:`~openus_monai.engines.PretrainingEngine`."""

from .base import PretrainingMethod
from .ema import TeacherEMA
from .mae import MAEMethod
from .masking import STRATEGIES, LossMemory, SelfAdaptiveMasking, minmax
from .openus import OpenUSMethod
from .reconstruction import MaskedReconstructionMethod
from .usfm import USFMMethod

__all__ = [
    "STRATEGIES",
    "LossMemory",
    "MAEMethod",
    "MaskedReconstructionMethod",
    "OpenUSMethod",
    "PretrainingMethod",
    "SelfAdaptiveMasking",
    "TeacherEMA",
    "USFMMethod",
    "minmax",
]
