"""Ignite handlers of OpenUS pretraining."""

from .attach_metrics import MetricsAttacher
from .epoch_metrics import EpochAverageHandler
from .export import BackboneExportHandler
from .masking import STRATEGIES, LossMemory, SelfAdaptiveMaskingHandler
from .pictures import MaskingPictureHandler
from .progress import TerminalProgressBar
from .run_summary import RunSummaryHandler
from .schedules import cosine, linear, progress, warmup_cosine
from .teacher_ema import TeacherEMAHandler
from .tracking import MLflowExtrasHandler

__all__ = [
    "STRATEGIES",
    "BackboneExportHandler",
    "EpochAverageHandler",
    "MaskingPictureHandler",
    "MetricsAttacher",
    "LossMemory",
    "MLflowExtrasHandler",
    "RunSummaryHandler",
    "SelfAdaptiveMaskingHandler",
    "TeacherEMAHandler",
    "TerminalProgressBar",
    "cosine",
    "linear",
    "progress",
    "warmup_cosine",
]
