"""Ignite handlers: pretraining (masking, teacher EMA, export, pictures), run resumption, evaluation reports, tracking."""

from .classification_report import ClassificationReport
from .epoch_metrics import EpochAverageHandler
from .export import BackboneExportHandler
from .masking import STRATEGIES, LossMemory, SelfAdaptiveMaskingHandler
from .metrics_report import MetricsReport
from .pictures import MaskingPictureHandler
from .resume import BestMetricState, EarlyStopState, EpochSeedHandler, MidEpochResumeHandler
from .schedules import cosine, linear, progress, warmup_cosine
from .teacher_ema import TeacherEMAHandler
from .tracking import MLflowExtrasHandler

__all__ = [
    "STRATEGIES",
    "BackboneExportHandler",
    "BestMetricState",
    "ClassificationReport",
    "EarlyStopState",
    "EpochSeedHandler",
    "EpochAverageHandler",
    "MaskingPictureHandler",
    "LossMemory",
    "MLflowExtrasHandler",
    "MetricsReport",
    "MidEpochResumeHandler",
    "SelfAdaptiveMaskingHandler",
    "TeacherEMAHandler",
    "cosine",
    "linear",
    "progress",
    "warmup_cosine",
]
