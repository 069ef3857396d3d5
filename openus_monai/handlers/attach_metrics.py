"""Metrics on an engine without making one of them its key metric."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monai.utils import optional_import

Engine, _ = optional_import("ignite.engine", name="Engine")

__all__ = ["MetricsAttacher"]


class MetricsAttacher:
    """Attach Ignite metrics to an engine under their names, as a handler in a handler list.

    MONAI workflows attach ``additional_metrics`` only together with a key metric, and a key metric is
    logged as the run's "best metric"; a training metric (e.g. ``train_accuracy``) that only informs goes
    through this handler, leaving the validation metric the one key metric.

    Args:
        metrics: name -> Ignite metric (e.g. MONAI's ``IgniteMetricHandler``).
    """

    def __init__(self, metrics: Mapping[str, Any]) -> None:
        self.metrics = dict(metrics)

    def attach(self, engine: Engine) -> None:
        """Attach every metric to ``engine``; its value appears in ``engine.state.metrics[name]``."""
        for name, metric in self.metrics.items():
            metric.attach(engine, name)
