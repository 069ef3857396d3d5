"""Studies: experiments that run the bundles (in subprocesses) and summarise them."""

from .label_efficiency import DEFAULT_RATIOS, run_label_efficiency

__all__ = ["DEFAULT_RATIOS", "run_label_efficiency"]
