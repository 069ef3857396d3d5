"""Ignite handlers of OpenUS pretraining."""

from .export import BackboneExportHandler
from .masking import STRATEGIES, LossMemory, SelfAdaptiveMaskingHandler
from .pictures import MaskingPictureHandler
from .schedules import cosine, linear, progress, warmup_cosine
from .teacher_ema import TeacherEMAHandler

__all__ = [
    "STRATEGIES",
    "BackboneExportHandler",
    "MaskingPictureHandler",
    "LossMemory",
    "SelfAdaptiveMaskingHandler",
    "TeacherEMAHandler",
    "cosine",
    "linear",
    "progress",
    "warmup_cosine",
]
