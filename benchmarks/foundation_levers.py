"""Every lever tried on the CPU-scale pretraining, in one table: pretrained minus random initialisation at 10 % of the
labels, paired by seed, for each task and arm (fine-tuned, frozen), in points (Dice or accuracy x 100).

It reads only the studies committed under ``weights/`` (each ``TASK/label_efficiency.csv`` of a foundation study, and
``study_finetune_recipe/recipe_checks.csv``), so the table is rebuilt from the repository alone:

    python -m benchmarks.foundation_levers [--weights weights]

Each lever names where its pretrained arms and its random-initialisation controls ran. Controls come from the same
study where it ran them, else from the study whose protocol and seeds it repeated (a pretrained arm and its control
share the seed, hence the label subset). Goals of the issue, at 10 % of the labels: +5 on BUSI and DDTI
segmentation and on BUSI classification.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openus_monai.studies.foundation import difference_rows, read_study_csv
from openus_monai.studies.label_efficiency import format_mean_std

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
TASKS = {"busi_seg": ("dice", "BUSI seg"), "busi_cls": ("accuracy", "BUSI cls"), "ddti_seg": ("dice", "DDTI seg")}
RATIO = 0.1


@dataclass(frozen=True)
class Lever:
    """One pretraining (or fine-tuning) variant and where its runs are.

    Attributes:
        label: what changed, for the table.
        study: folder (under ``weights/``) of the pretrained arms.
        control: folder of the random-initialisation arms, paired by seed.
        arms: pretrained arm -> its control arm; fine-tuned first, then frozen.
    """

    label: str
    study: str
    control: str
    arms: dict[str, str] = field(default_factory=lambda: {"openus": "random", "openus_frozen": "random_frozen"})


LEVERS = (
    Lever("shipped: 30 epochs on the 1,474-image corpus, patch temperature 0.07 (`study/`)", "study", "study"),
    Lever("random block masking instead of self-adaptive (`study_ablation/`)", "study_ablation", "study_ablation",
          {"ablation": "random"}),
    Lever("patch temperature 0.01, today's `small.json` (`study_patch_temp/`)", "study_patch_temp", "study_patch_temp"),
    Lever("45 epochs instead of 30 (`study_e45/`)", "study_e45", "study"),
    Lever("reconstruction terms only (`study_loss_terms/recon_only/`)", "study_loss_terms/recon_only", "study_patch_temp"),
    Lever("iBOT terms only (`study_loss_terms/contrastive_only/`)", "study_loss_terms/contrastive_only",
          "study_patch_temp"),
    Lever("GPU (H200), 28 epochs at batch 64 in 4 min (`study_gpu/run1_batch64/`)", "study_gpu/run1_batch64",
          "study_patch_temp"),
    Lever("GPU (H200), 14 epochs at batch 32 on the Triton scan in 4 min (`study_gpu/run2_batch32_triton/`)",
          "study_gpu/run2_batch32_triton", "study_patch_temp"),
    Lever("shipped, gentle fine-tuning: encoder lr x 0.1, no drop path (`study_finetune_recipe/`)",
          "study_finetune_recipe", "study_finetune_recipe", {"openus_els01_dp0": "random_els01_dp0"}),
    Lever("shipped, downstream 48 epochs instead of 12 (`study_longer_finetuning/`)", "study_longer_finetuning",
          "study_longer_finetuning"),
    Lever("45 epochs, downstream 48 epochs (`study_e45/longer_finetuning/`)", "study_e45/longer_finetuning",
          "study_longer_finetuning"),
)


def _recipe_rows(path: Path, task: str) -> list[dict[str, Any]]:
    """``recipe_checks.csv`` (columns ``task, arm, label_ratio, seed, dice``) as a study's rows for one task."""
    return [{**r, "name": r["arm"]} for r in read_study_csv(path) if r["task"] == task]


def study_rows(weights: Path, folder: str, task: str) -> list[dict[str, Any]]:
    """The runs of one task in one committed study (empty where that study did not run the task)."""
    recipe = weights / folder / "recipe_checks.csv"
    if recipe.is_file():
        return _recipe_rows(recipe, task)
    path = weights / folder / task / "label_efficiency.csv"
    return read_study_csv(path) if path.is_file() else []


def paired_points(weights: Path, lever: Lever, task: str, arm: str) -> list[float]:
    """Per-seed ``arm - control`` at :data:`RATIO`, in points; empty where either side did not run."""
    metric = TASKS[task][0]
    control = lever.arms[arm]
    rows = [r for r in study_rows(weights, lever.study, task) if r["name"] == arm]
    rows += [r for r in study_rows(weights, lever.control, task) if r["name"] == control]
    return [100 * d[metric] for d in difference_rows(rows, metric, arm, control) if d["label_ratio"] == RATIO]


def levers_table(weights: Path = WEIGHTS) -> str:
    """The Markdown table: one row per lever found under ``weights``, ``mean ± std`` points per task and arm."""
    header = ["lever (pretrained - random init, points at 10 % of the labels, 3 seeds)"]
    header += [f"{name}, {kind}" for name, _ in ((TASKS[t][1], t) for t in TASKS) for kind in ("fine-tuned", "frozen")]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for lever in LEVERS:
        if not (weights / lever.study).is_dir():
            continue
        fine_tuned, frozen = (list(lever.arms) + [None])[:2]
        cells = []
        for task in TASKS:
            for arm in (fine_tuned, frozen):
                diffs = paired_points(weights, lever, task, arm) if arm else []
                sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
                cells.append(format_mean_std(statistics.mean(diffs), sd, len(diffs), digits=1, signed=True) if diffs else "-")
        lines.append(f"| {lever.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="the folder of the committed studies")
    print(levers_table(parser.parse_args().weights))


if __name__ == "__main__":
    main()
