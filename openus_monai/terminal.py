"""Whether to draw progress bars: only for a person watching a terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from .options import as_flag

__all__ = ["PROGRESS_ENV", "progress_bar", "show_progress"]

#: environment variable: ``1`` forces progress bars on, ``0`` off (default: on when stderr is a terminal)
PROGRESS_ENV = "OPENUS_MONAI_PROGRESS"


def show_progress() -> bool:
    """True when ``$OPENUS_MONAI_PROGRESS`` says yes (``1``, ``true``...), or it is unset and stderr (tqdm's
    stream) is a terminal.

    Raises:
        ValueError: ``$OPENUS_MONAI_PROGRESS`` is neither yes nor no.
    """
    value = os.environ.get(PROGRESS_ENV, "").strip()
    if value:
        return as_flag(value, PROGRESS_ENV)
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(items: Iterable, desc: str, enabled: bool = True, total: int | None = None, unit: str = "it") -> Iterable:
    """``items`` in a tqdm bar (rate, elapsed and remaining time) when ``enabled`` and :func:`show_progress`,
    else ``items`` unchanged (a log file, a pipe or CI gets no bar).

    Args:
        items: what to iterate over.
        desc: the bar's label.
        enabled: the caller's ``progress`` option (False: never a bar).
        total: the number of items, when ``items`` has no ``len``.
        unit: what one item is (``"file"``, ``"img"``).
    """
    if not (enabled and show_progress()):
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit, leave=False, total=total)
