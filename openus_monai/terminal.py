"""Whether to draw progress bars: only for a person watching a terminal."""

from __future__ import annotations

import os
import sys

__all__ = ["PROGRESS_ENV", "show_progress"]

#: environment variable: ``1`` forces progress bars on, ``0`` off (default: on when stderr is a terminal)
PROGRESS_ENV = "OPENUS_MONAI_PROGRESS"


def show_progress() -> bool:
    """True when ``$OPENUS_MONAI_PROGRESS`` is ``1``, or it is unset and stderr (tqdm's stream) is a terminal."""
    value = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if value:
        return value not in ("0", "false", "no", "off")
    return bool(getattr(sys.stderr, "isatty", lambda: False)())
