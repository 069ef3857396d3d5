"""Engines: the generic pretraining engine and the guarded supervised trainer."""

from .label_efficiency import DEFAULT_RATIOS, run_label_efficiency
from .nonfinite import GuardedSupervisedTrainer, NonFiniteLossError
from .pretrainer import OpenUSPretrainer
from .pretraining import PretrainingEngine, amp_dtype

__all__ = ["GuardedSupervisedTrainer", "NonFiniteLossError", "OpenUSPretrainer", "PretrainingEngine", "amp_dtype"]

__all__ += ["DEFAULT_RATIOS", "run_label_efficiency"]
