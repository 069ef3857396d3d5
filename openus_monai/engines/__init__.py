"""Engines: the generic pretraining engine and the non-finite-loss guarded supervised trainer."""

from .nonfinite import GuardedSupervisedTrainer, NonFiniteLossError
from .pretrainer import OpenUSPretrainer
from .pretraining import PretrainingEngine, amp_dtype

__all__ = ["GuardedSupervisedTrainer", "NonFiniteLossError", "OpenUSPretrainer", "PretrainingEngine", "amp_dtype"]
