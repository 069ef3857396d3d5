"""Engines: the OpenUS pretraining trainer."""

from .pretrainer import NonFiniteLossError, OpenUSPretrainer

__all__ = ["NonFiniteLossError", "OpenUSPretrainer"]
