"""Former home of the OpenUS pretraining engine; the engine is now generic (:mod:`openus_monai.engines.pretraining`)."""

from __future__ import annotations

import warnings

from .nonfinite import NonFiniteLossError
from .pretraining import PretrainingEngine, amp_dtype

__all__ = ["NonFiniteLossError", "OpenUSPretrainer", "amp_dtype"]


class OpenUSPretrainer(PretrainingEngine):
    """Deprecated name of :class:`~openus_monai.engines.PretrainingEngine` (same arguments), run with an
    :class:`~openus_monai.methods.OpenUSMethod` as ``network``."""

    def __init__(self, *args, **kwargs) -> None:
        warnings.warn(
            "OpenUSPretrainer is deprecated: use openus_monai.engines.PretrainingEngine with an openus_monai.methods.OpenUSMethod",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)
