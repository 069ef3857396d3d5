"""Engines: the OpenUS pretraining trainer and the non-finite-loss guarded supervised trainer."""

from .nonfinite import GuardedSupervisedTrainer, NonFiniteLossError
from .pretrainer import OpenUSPretrainer

__all__ = ["GuardedSupervisedTrainer", "NonFiniteLossError", "OpenUSPretrainer"]
