"""Ignite handlers of OpenUS pretraining."""

from .masking import STRATEGIES, LossMemory, SelfAdaptiveMaskingHandler
from .schedules import cosine, linear, progress, warmup_cosine
from .teacher_ema import TeacherEMAHandler

__all__ = [
    "STRATEGIES",
    "LossMemory",
    "SelfAdaptiveMaskingHandler",
    "TeacherEMAHandler",
    "cosine",
    "linear",
    "progress",
    "warmup_cosine",
]
