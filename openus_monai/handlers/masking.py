"""Former home of the self-adaptive masking; it is now a part of the OpenUS method (:mod:`openus_monai.methods.masking`)."""

from __future__ import annotations

from ..methods.masking import STRATEGIES, LossMemory, SelfAdaptiveMasking, minmax

__all__ = ["STRATEGIES", "LossMemory", "SelfAdaptiveMaskingHandler", "minmax"]

# The former name: no longer attached to the engine (the method calls it), kept importable.
SelfAdaptiveMaskingHandler = SelfAdaptiveMasking
