"""Progress bars with an ETA for any Ignite engine, drawn only for a person watching a terminal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monai.utils import optional_import

from openus_monai.terminal import show_progress

Engine, _ = optional_import("ignite.engine", name="Engine")
ProgressBar, _ = optional_import("ignite.handlers", name="ProgressBar")

__all__ = ["TerminalProgressBar"]


class TerminalProgressBar:
    """Ignite's ``ProgressBar`` (tqdm: iterations, rate, elapsed and remaining time) when stderr is a terminal.

    In a log file or a pipe (CI, ``nohup``) nothing is drawn: the StatsHandler lines say the same there.
    ``OPENUS_MONAI_PROGRESS=1`` / ``0`` forces bars on / off (:func:`openus_monai.terminal.show_progress`).

    Args:
        desc: the bar's label, e.g. ``"train"``, ``"evaluate"``, ``"infer"``.
        persist: keep each epoch's finished bar on screen.
        output_transform: engine output -> number or dict of numbers shown beside the bar (e.g. the loss).
    """

    def __init__(self, desc: str = "", persist: bool = False, output_transform: Callable[[Any], Any] | None = None) -> None:
        self.desc = desc
        self.persist = persist
        self.output_transform = output_transform

    def attach(self, engine: Engine) -> None:
        """Attach the bar to ``engine`` (a no-op when no terminal is watching)."""
        if not show_progress():
            return
        bar = ProgressBar(persist=self.persist, desc=self.desc) if self.desc else ProgressBar(persist=self.persist)
        bar.attach(engine, output_transform=self.output_transform)
