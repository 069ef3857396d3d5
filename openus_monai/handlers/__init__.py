"""Ignite handlers of pretraining (and the schedule owner)."""

from .epoch_metrics import EpochAverageHandler
from .export import BackboneExportHandler
from .gradients import FreezeLastLayerHandler, PerParameterGradClipHandler
from .masking import STRATEGIES, LossMemory, SelfAdaptiveMaskingHandler
from .pictures import MaskingPictureHandler
from .schedules import PretrainingSchedule, cosine, linear, progress, warmup_cosine
from .teacher_ema import TeacherEMAHandler
from .timing import PhaseTimerHandler
from .tracking import MLflowExtrasHandler

__all__ = [
    "STRATEGIES",
    "BackboneExportHandler",
    "EpochAverageHandler",
    "FreezeLastLayerHandler",
    "MaskingPictureHandler",
    "LossMemory",
    "MLflowExtrasHandler",
    "PerParameterGradClipHandler",
    "PhaseTimerHandler",
    "PretrainingSchedule",
    "SelfAdaptiveMaskingHandler",
    "TeacherEMAHandler",
    "cosine",
    "linear",
    "progress",
    "warmup_cosine",
]
