"""Small expressions the bundles' JSON configs evaluate: the run's process count and a selection of metric handlers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ignite import distributed as idist

__all__ = ["pick_metrics", "world_size"]


def world_size() -> int:
    """Processes in the run (1 without torch.distributed)."""
    return idist.get_world_size()


def pick_metrics(metrics: Mapping[str, Any], keep: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> dict:
    """Select metric handlers by name, e.g. the key metric (``keep=[name]``) and the others (``exclude=[name]``).

    Args:
        metrics: ``{name: metric handler}`` (a config's metric section).
        keep: the names to keep, in this order (default: all but ``exclude``).
        exclude: the names to leave out.

    Returns:
        the selected ``{name: handler}``.

    Raises:
        ValueError: a name in ``keep`` or ``exclude`` is not in ``metrics`` (lists the available names).
    """
    for name in [*(keep or ()), *exclude]:
        if name not in metrics:
            raise ValueError(f"metric {name!r} is not one of {sorted(metrics)} (check key_metric)")
    names = list(keep) if keep is not None else [k for k in metrics if k not in exclude]
    return {k: metrics[k] for k in names}
