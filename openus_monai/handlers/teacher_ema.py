"""The teacher EMA as an Ignite handler, for engines whose method does not update its teacher itself."""

from __future__ import annotations

import torch.nn as nn
from ignite.engine import Engine, Events

from ..methods.ema import TeacherEMA

__all__ = ["TeacherEMAHandler"]


class TeacherEMAHandler:
    """After every iteration that stepped: :class:`~openus_monai.methods.TeacherEMA` with the momentum the
    schedule owner wrote into the iteration output (``output[0][key]``).

    :class:`~openus_monai.methods.OpenUSMethod` updates its teacher itself (:meth:`update`); this handler is
    for other engines whose output carries the momentum. A skipped step (``skipped`` in the output, or no
    momentum) leaves the teacher alone.

    Args:
        student: the trained module.
        teacher: its EMA copy (same parameter names where shared).
        key: the output entry with the momentum.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, key: str = "teacher_momentum") -> None:
        self.ema, self.key = TeacherEMA(student, teacher), key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output[0] if isinstance(engine.state.output, (list, tuple)) else engine.state.output
        if output.get("skipped") or self.key not in output:
            return
        self.ema.update(output[self.key])
