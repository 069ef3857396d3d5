"""Ignite handlers: the pretraining schedule owner and its handlers (gradients, teacher EMA, export, pictures,
timing), run resumption, evaluation reports, tracking."""

from .attach_metrics import MetricsAttacher
from .classification_report import ClassificationReport
from .embeddings import EmbeddingWriter
from .epoch_metrics import EpochAverageHandler
from .export import BackboneExportHandler
from .gradients import FreezeLastLayerHandler, PerParameterGradClipHandler
from .masking import STRATEGIES, LossMemory, SelfAdaptiveMaskingHandler
from .metrics_report import MetricsReport
from .pictures import MaskingPictureHandler
from .progress import TerminalProgressBar
from .representation_monitor import RepresentationMonitor
from .resume import BestMetricState, EarlyStopState, EpochSeedHandler, MidEpochResumeHandler
from .run_summary import RunSummaryHandler
from .schedules import PretrainingSchedule, cosine, linear, progress, warmup_cosine
from .teacher_ema import TeacherEMAHandler
from .timing import PhaseTimerHandler
from .tracking import MLflowExtrasHandler

__all__ = [
    "STRATEGIES",
    "BackboneExportHandler",
    "BestMetricState",
    "ClassificationReport",
    "EarlyStopState",
    "EmbeddingWriter",
    "EpochSeedHandler",
    "EpochAverageHandler",
    "FreezeLastLayerHandler",
    "MaskingPictureHandler",
    "MetricsAttacher",
    "LossMemory",
    "MLflowExtrasHandler",
    "MetricsReport",
    "MidEpochResumeHandler",
    "PerParameterGradClipHandler",
    "PhaseTimerHandler",
    "PretrainingSchedule",
    "RepresentationMonitor",
    "RunSummaryHandler",
    "SelfAdaptiveMaskingHandler",
    "TeacherEMAHandler",
    "TerminalProgressBar",
    "cosine",
    "linear",
    "progress",
    "warmup_cosine",
]
