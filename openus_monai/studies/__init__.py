"""Studies: experiments that run the bundles (in subprocesses) and summarise them."""

from .foundation import TASKS, run_foundation_study
from .label_efficiency import DEFAULT_RATIOS, run_label_efficiency

__all__ = ["DEFAULT_RATIOS", "TASKS", "run_foundation_study", "run_label_efficiency"]
