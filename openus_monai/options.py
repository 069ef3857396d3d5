"""Option values as a command line or a config gives them: yes/no flags and lists of names.

Command-line parsers pass words through as strings (Fire gives ``--progress false`` as ``"false"``, and
``--exclude busi,ddti`` as ``"busi,ddti"``; ``python -m monai.bundle`` gives ``--skip_invalid false`` as
``"false"``), and a non-empty string is truthy in Python. Every such option is read here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["FALSE_WORDS", "TRUE_WORDS", "as_flag", "as_names"]

#: words read as yes / no (any case, surrounding spaces ignored); ``""``, ``none`` and ``null`` are "not set": no
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off", "", "none", "null")


def as_flag(value: Any, name: str = "flag") -> bool:
    """``value`` as a bool: bools as they are, None as False, 0 / 1, and the words of :data:`TRUE_WORDS` /
    :data:`FALSE_WORDS`.

    Args:
        value: the option's value.
        name: the option, as the user spells it (named in the error).

    Raises:
        ValueError: another string or number (``--progress flase``, ``--cache 2``).
    """
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise ValueError(f"{name} must be true or false (also yes/no, on/off, 1/0), got {value!r}")


def as_names(value: str | Iterable[Any] | None) -> list[str]:
    """A list of names from a comma-separated string, a list (whose items may hold commas too) or None.

    ``"busi, ddti"``, ``["busi", "ddti"]`` and ``("busi,ddti",)`` all give ``["busi", "ddti"]``; empty names
    are dropped and the order is kept.
    """
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [name.strip() for item in items for name in str(item).split(",") if name.strip()]
