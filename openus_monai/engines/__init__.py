"""Engines: the OpenUS pretraining trainer."""

from .label_efficiency import DEFAULT_RATIOS, run_label_efficiency
from .pretrainer import NonFiniteLossError, OpenUSPretrainer

__all__ = ["NonFiniteLossError", "OpenUSPretrainer"]

__all__ += ["DEFAULT_RATIOS", "run_label_efficiency"]
