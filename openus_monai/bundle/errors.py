"""The real error on top: config-expression failures printed as the exception that caused them.

MONAI evaluates every ``$`` expression and ``_target_`` of a bundle config inside a ``try`` and re-raises a
failure as ``RuntimeError("Failed to evaluate ConfigExpression: ...")`` or ``RuntimeError("Failed to
instantiate component ...")``, chained (``from e``) to the original. Python's default hook then prints the
original traceback, one more traceback per wrapper, and ends on the wrapper's line: the message the user
needs (``dataset_dir /x does not exist``) sits in the middle of some 70 lines.

The choice: a :data:`sys.excepthook`, installed when a bundle config imports this module (each config's
``imports`` holds ``"$import openus_monai.bundle.errors"``; MONAI runs import statements first). The hook
is the one edge that every way of running a bundle shares: ``python -m monai.bundle run ...`` as the README
writes it (the exception leaves MONAI's and fire's code uncaught), and the bundles our CLI launches as
subprocesses. It changes only how an *uncaught* exception is printed, never what is raised or caught, so
in-process callers (tests, MONAI Label, ``ConfigWorkflow`` users) still get MONAI's exception. Rejected:
catching inside the configs' ``run`` expressions (MONAI wraps that again) and a wrapper command (the
README's ``monai.bundle run`` would not get it).

The output: the original exception's own frames, one line per config item it was raised in, and last the
original ``Type: message``; a message of many lines (``load_state_dict``'s hundreds of ``size mismatch``
lines) is shortened, with a hint. ``OPENUS_MONAI_FULL_TRACEBACK=1`` restores Python's default output.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from types import TracebackType

__all__ = ["FULL_TRACEBACK_ENV", "format_config_error", "install", "shorten_message", "unwrap_config_error"]

#: environment variable: set to 1 for Python's full, wrapped traceback
FULL_TRACEBACK_ENV = "OPENUS_MONAI_FULL_TRACEBACK"
_WRAPPER = re.compile(r"^Failed to (evaluate|instantiate component) ")
_STATE_DICT = re.compile(r"size mismatch for |Missing key\(s\) in state_dict|Unexpected key\(s\) in state_dict")


def unwrap_config_error(exc: BaseException) -> tuple[BaseException, list[str]]:
    """The exception under MONAI's config wrappers, and the config items it was raised in (outermost first).

    Args:
        exc: an exception, possibly ``RuntimeError("Failed to evaluate ...")`` chained to its cause.

    Returns:
        ``(original, items)``: ``exc`` itself and ``[]`` when it is not a wrapper.
    """
    items: list[str] = []
    while isinstance(exc, RuntimeError) and exc.__cause__ is not None and _WRAPPER.match(str(exc)):
        text = " ".join(str(exc).split())  # one line: the wrapper's repr spreads the expression over lines
        text = text.replace("__local_refs['", "@").replace("']", "")
        items.append(text if len(text) <= 200 else text[:197] + "...")
        exc = exc.__cause__
    return exc, items


def shorten_message(message: str, max_lines: int = 8) -> str:
    """``message`` with at most ``max_lines`` lines, saying how many were left out.

    Args:
        message: an exception message.
        max_lines: lines kept from the start.

    Returns:
        the message, shortened where it had more lines.
    """
    lines = message.splitlines()
    if len(lines) <= max_lines:
        return message
    kept = "\n".join(lines[:max_lines])
    return f"{kept}\n    ... {len(lines) - max_lines} more lines (set {FULL_TRACEBACK_ENV}=1 to see them all)"


def _hint(message: str) -> str:
    if _STATE_DICT.search(message):
        return (
            "hint: the checkpoint holds a network of another configuration than the one these configs build; "
            "give evaluation/inference the configs the model was trained with (e.g. add configs/tiny.json)."
        )
    return ""


def format_config_error(exc: BaseException) -> str | None:
    """The short report of a config-expression failure (None when ``exc`` is not one).

    Args:
        exc: the uncaught exception.

    Returns:
        the text to print: the original traceback (its own frames), the config items, a hint where one
        applies, and last the original ``Type: message``.
    """
    original, items = unwrap_config_error(exc)
    if not items:
        return None
    stack = "".join(traceback.TracebackException.from_exception(original, limit=-8).stack.format())
    message = shorten_message(str(original))
    name = type(original).__qualname__
    module = type(original).__module__
    if module not in ("builtins", "__main__"):
        name = f"{module}.{name}"
    lines = ["Traceback of the error (most recent call last):", stack.rstrip("\n")] if stack else []
    lines += ["raised while evaluating the bundle config:"] + [f"  {i}" for i in items]
    hint = _hint(str(original))
    if hint:
        lines.append(hint)
    lines.append(f"{name}: {message}" if message else name)
    return "\n".join(lines) + "\n"


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    text = None if os.environ.get(FULL_TRACEBACK_ENV) else format_config_error(exc)
    if text is None:
        _previous_hook(exc_type, exc, tb)
        return
    sys.stderr.write(text)
    sys.stderr.flush()


_previous_hook = sys.excepthook


def install() -> None:
    """Print uncaught config-expression failures as their original exception (idempotent)."""
    global _previous_hook
    if sys.excepthook is not _excepthook:
        _previous_hook = sys.excepthook
        sys.excepthook = _excepthook


install()  # on import: bundle configs reach this module through their ``imports`` list
