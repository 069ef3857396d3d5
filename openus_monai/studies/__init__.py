"""Studies: experiments that run the bundles (in subprocesses) and summarise them."""

from .compare_recipes import run_compare_recipes
from .foundation import TASKS, merge_foundation_studies, run_foundation_study
from .label_efficiency import DEFAULT_RATIOS, run_label_efficiency

__all__ = ["DEFAULT_RATIOS", "TASKS", "merge_foundation_studies", "run_compare_recipes", "run_foundation_study",
           "run_label_efficiency"]
