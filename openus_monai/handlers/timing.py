"""Wall time of the phases of each iteration, from MONAI's ``IterationEvents``."""

from __future__ import annotations

import time

from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

__all__ = ["PhaseTimerHandler"]

PHASES = (
    ("forward", IterationEvents.FORWARD_COMPLETED),
    ("backward", IterationEvents.BACKWARD_COMPLETED),
    ("step", IterationEvents.MODEL_COMPLETED),
)


class PhaseTimerHandler:
    """Seconds of each phase of the last iteration in :attr:`laps`: ``forward`` (batch to device, the
    method's forward and losses), ``backward`` (backward, non-finite check, gradient handlers), ``step``
    (optimizer step and the method's update). No device synchronisation: on a GPU a phase's time may show
    in a later one. :attr:`history` keeps every iteration's laps when ``keep_history``.

    Args:
        keep_history: append each iteration's laps to :attr:`history`.
    """

    def __init__(self, keep_history: bool = False) -> None:
        self.keep_history = keep_history
        self.laps: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self._last = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self._start)
        for name, event in PHASES:
            engine.add_event_handler(event, self._lap, name)
        if self.keep_history:
            engine.add_event_handler(IterationEvents.MODEL_COMPLETED, lambda _: self.history.append(dict(self.laps)))

    def _start(self, engine: Engine) -> None:
        self.laps, self._last = {}, time.perf_counter()

    def _lap(self, engine: Engine, name: str) -> None:
        now = time.perf_counter()
        self.laps[name], self._last = now - self._last, now
