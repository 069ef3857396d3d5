"""Engines: the OpenUS pretraining trainer."""

from .label_efficiency import DEFAULT_RATIOS, run_label_efficiency
from .nonfinite import GuardedSupervisedTrainer, NonFiniteLossError
from .pretrainer import OpenUSPretrainer

__all__ = ["GuardedSupervisedTrainer", "NonFiniteLossError", "OpenUSPretrainer"]

__all__ += ["DEFAULT_RATIOS", "run_label_efficiency"]
