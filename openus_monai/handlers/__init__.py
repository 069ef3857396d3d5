"""Ignite handlers of OpenUS pretraining."""

from .epoch_metrics import EpochAverageHandler
from .export import BackboneExportHandler
from .masking import STRATEGIES, LossMemory, SelfAdaptiveMaskingHandler
from .pictures import MaskingPictureHandler
from .representation_monitor import RepresentationMonitor
from .schedules import cosine, linear, progress, warmup_cosine
from .teacher_ema import TeacherEMAHandler
from .tracking import MLflowExtrasHandler

__all__ = [
    "STRATEGIES",
    "BackboneExportHandler",
    "EpochAverageHandler",
    "MaskingPictureHandler",
    "LossMemory",
    "MLflowExtrasHandler",
    "RepresentationMonitor",
    "SelfAdaptiveMaskingHandler",
    "TeacherEMAHandler",
    "cosine",
    "linear",
    "progress",
    "warmup_cosine",
]
