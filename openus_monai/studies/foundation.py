"""The foundation study: does the pretrained encoder help with few labels, on several tasks?

One matrix of label-efficiency studies (:func:`~openus_monai.studies.label_efficiency.run_label_efficiency`):
for every task (a bundle on a prepared data set, :data:`TASKS`), the same arms: the pretrained encoder
fine-tuned (``openus``) and frozen (``openus_frozen``), the same architecture from random initialisation
(``random``, the control), MONAI's baseline network of the bundle (``basicunet`` / ``densenet121``) and,
optionally, an ablation checkpoint (a second pretraining, e.g. random instead of self-adaptive masking) at
one label ratio. Every run has the same epoch budget, image size, batch size and data: the label subsets are
drawn from the data set's ``training`` list, the test metrics come from its ``test`` list (the images held
out of pretraining).

Per task, ``OUTPUT/TASK/`` holds the study's CSV, summary and plot, and ``table.md`` (mean +- standard
deviation over seeds per arm and label ratio, and the paired differences pretrained - random); ``OUTPUT/
results.md`` combines the tasks. Runs are resumable: a finished run (same configs and overrides) is reused.
:func:`merge_foundation_studies` joins studies run apart (say, one label ratio each) into one table per task.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openus_monai.io import atomic_path

from .label_efficiency import (
    RANDOM_PREFIX,
    format_mean_std,
    plot_label_efficiency,
    run_label_efficiency,
    summarize_runs,
    write_csv,
)

__all__ = [
    "ARMS",
    "TASKS",
    "StudyTask",
    "difference_rows",
    "markdown_table",
    "merge_foundation_studies",
    "read_study_csv",
    "run_foundation_study",
    "study_arms",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyTask:
    """One task of the study: a bundle on a prepared data set.

    Attributes:
        bundle: the bundle's name (``openus_seg``, ``openus_cls``).
        source: the data set's folder under the prepared sources (holding the ``prepare`` output ``datalist.json``).
        metric: the metric of the table (a key of the evaluation's ``metrics.json``).
        baseline: the bundle's MONAI baseline config, relative to the bundle folder.
        overrides: the task's own bundle options (e.g. ``num_classes``).
        title: a line saying what the task is, for the tables.
    """

    bundle: str
    source: str
    metric: str
    baseline: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    title: str = ""

    @property
    def baseline_name(self) -> str:
        """The baseline arm's name: its config file's stem (``basicunet``, ``densenet121``)."""
        return Path(self.baseline).stem


_SEG_BASELINE = "configs/baselines/basicunet.json"
#: segmentation: AdamW at 1e-3 for every arm (the bundle's 1e-4 is for long schedules; a study run is ~100 steps),
#: as ``benchmarks/bench_seg_busi.py``; no predicted masks written at evaluation
_SEG = {"learning_rate": 1e-3, "save_masks": False}
_CLS_BASELINE = "configs/baselines/densenet121.json"

#: the study's tasks; ``source`` is a folder of the ``corpus`` command's ``sources/`` (``prepare`` output)
TASKS: dict[str, StudyTask] = {
    "busi_seg": StudyTask("openus_seg", "busi", "dice", _SEG_BASELINE, {**_SEG, "num_classes": 2},
                          "BUSI breast lesion segmentation (test Dice of the lesion)"),
    "busi_cls": StudyTask("openus_cls", "busi", "accuracy", _CLS_BASELINE, {},
                          "BUSI classification, benign / malignant / normal (test accuracy)"),
    "ddti_seg": StudyTask("openus_seg", "ddti", "dice", _SEG_BASELINE, {**_SEG, "num_classes": 2},
                          "DDTI thyroid nodule segmentation (test Dice of the nodule)"),
    "usgra_seg": StudyTask("openus_seg", "usgra-seg", "dice", _SEG_BASELINE, {**_SEG, "num_classes": 3},
                           "USGRA-seg nerve and vessel segmentation, 3 classes (test Dice, mean of the 2 foreground classes)"),
}

#: the arms, in table order; ``baseline`` is the task's MONAI network, ``ablation`` needs an ablation checkpoint
ARMS: tuple[str, ...] = ("openus", "openus_frozen", "random", "random_frozen", "baseline", "ablation")
#: the arms a study runs unless told otherwise (the ablation needs its own checkpoint)
DEFAULT_ARMS: tuple[str, ...] = ARMS[:5]
#: each pretrained arm's own control (same architecture, random weights, same freezing); ``random`` where the
#: table has no such arm
_CONTROLS = {"openus": "random", "openus_frozen": "random_frozen", "ablation": "random"}


def study_arms(
    task: StudyTask,
    weights: str | os.PathLike,
    arms: Sequence[str] = DEFAULT_ARMS,
    ablation: str | os.PathLike | None = None,
    ablation_ratios: Sequence[float] = (0.1,),
) -> dict[str, dict[str, Any]]:
    """The arms of ``task`` in the form :func:`~openus_monai.studies.label_efficiency.normalize_arms` reads.

    Args:
        task: the task.
        weights: the pretrained encoder (a self-describing encoder file).
        arms: which of :data:`ARMS` to run.
        ablation: the ablation's encoder file (required for the ``ablation`` arm; given, it adds the arm).
        ablation_ratios: the label ratios of the ablation arm.

    Returns:
        ``{name: arm}``; the baseline arm is named after its network.

    Raises:
        ValueError: an unknown arm, or the ``ablation`` arm without an ablation checkpoint.
    """
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; the study's arms are {list(ARMS)}")
    if "ablation" in arms and not ablation:
        raise ValueError("the ablation arm needs an ablation checkpoint (ablation=FILE)")
    chosen = list(arms) + (["ablation"] if ablation and "ablation" not in arms else [])
    every = {
        "openus": ("openus", {"pretrained": str(weights)}),
        "openus_frozen": ("openus_frozen", {"pretrained": str(weights), "freeze_encoder": True}),
        "random": ("random", {"pretrained": RANDOM_PREFIX + str(weights)}),
        "random_frozen": ("random_frozen", {"pretrained": RANDOM_PREFIX + str(weights), "freeze_encoder": True}),
        "baseline": (task.baseline_name, {"config_file": task.baseline}),
        "ablation": ("ablation", {"pretrained": str(ablation), "ratios": [float(r) for r in ablation_ratios]}),
    }
    return dict(every[a] for a in ARMS if a in chosen)


def read_study_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a study's ``label_efficiency.csv``, numbers as floats (empty cells as None)."""

    def value(v: str) -> Any:
        try:
            return float(v)
        except ValueError:
            return v if v != "" else None

    with open(path, newline="", encoding="utf-8") as f:
        return [{k: (v if k in ("name", "pretrained", "init", "config", "run_dir") else value(v)) for k, v in row.items()}
                for row in csv.DictReader(f)]


def difference_rows(rows: Sequence[Mapping[str, Any]], metric: str, arm: str, control: str = "random") -> list[dict[str, Any]]:
    """Per-seed differences ``arm - control`` of ``metric`` (pairs with the same label ratio and seed).

    The two arms of a pair share the label subset (the seed draws it), so the spread of the paired
    differences is the spread of the effect. Non-finite values are left out.

    Returns:
        rows ``{"name": "arm - control", "label_ratio", "seed", metric}``.
    """
    def finite(r: Mapping[str, Any]) -> bool:
        return r.get(metric) is not None and math.isfinite(float(r[metric]))

    ctrl = {(float(r["label_ratio"]), int(r["seed"])): float(r[metric]) for r in rows if r["name"] == control and finite(r)}
    return [
        {"name": f"{arm} - {control}", "label_ratio": float(r["label_ratio"]), "seed": int(r["seed"]),
         metric: float(r[metric]) - ctrl[(float(r["label_ratio"]), int(r["seed"]))]}
        for r in rows
        if r["name"] == arm and finite(r) and (float(r["label_ratio"]), int(r["seed"])) in ctrl
    ]


def _cell(entry: Mapping[str, Any] | None, metric: str, n_expected: int, signed: bool = False) -> str:
    if entry is None or not math.isfinite(entry[f"{metric}_mean"]):
        return "-"
    text = format_mean_std(entry[f"{metric}_mean"], entry[f"{metric}_std"], entry["n_seeds"], signed=signed)
    return text + (f" (n={entry['n_seeds']})" if entry["n_seeds"] != n_expected else "")


def markdown_table(rows: Sequence[Mapping[str, Any]], metric: str, control: str = "random") -> str:
    """The study as a Markdown table: one row per arm, one column per label ratio, ``mean ± std`` over seeds.

    Below the arms, one row per pretrained arm (``openus``, ``openus_frozen``, ``ablation``, where present)
    with the paired difference to its own control (mean ± std over seeds): ``openus_frozen - random_frozen`` where
    the frozen control ran, else ``arm - control``. A cell over fewer seeds than the most any cell has says
    ``(n=K)``; a missing cell is ``-``.

    Args:
        rows: the study's rows (``name``, ``label_ratio``, ``seed``, the metric), e.g. :func:`read_study_csv`.
        metric: the metric to tabulate.
        control: the arm the differences are taken against where an arm's own control is absent.

    Returns:
        the table (no trailing newline).
    """
    names = list(dict.fromkeys(r["name"] for r in rows))
    ratios = sorted({float(r["label_ratio"]) for r in rows})
    summary = {(s["name"], s["label_ratio"]): s for s in summarize_runs(rows, [metric])}
    n_expected = max((s["n_seeds"] for s in summary.values()), default=0)
    lines = [f"| arm ({metric}) | " + " | ".join(f"{r:g} of the labels" for r in ratios) + " |",
             "|---|" + "---|" * len(ratios)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(_cell(summary.get((name, r)), metric, n_expected) for r in ratios) + " |")
    for arm in [a for a in _CONTROLS if a in names]:
        own = _CONTROLS[arm] if _CONTROLS[arm] in names else control
        if own in names:
            diffs = {(s["name"], s["label_ratio"]): s for s in summarize_runs(difference_rows(rows, metric, arm, own), [metric])}
            label = f"{arm} - {own}"
            lines.append(f"| **{label}** | " + " | ".join(_cell(diffs.get((label, r)), metric, n_expected, signed=True) for r in ratios) + " |")
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def _write_task_section(out: Path, name: str, rows: Sequence[Mapping[str, Any]], settings: str, note: str = "") -> str:
    """``OUT/NAME/table.md``: the task's title, settings, run count and times, table and plot link; returns it."""
    task = TASKS[name]
    table = markdown_table(rows, task.metric)
    settings += f"; {len(rows)} runs"
    for key, what in (("wall_s", "wall"), ("cpu_s", "CPU")):
        times = [float(r[key]) for r in rows if r.get(key) is not None]
        if times:
            settings += f", {sum(times) / 60:.1f} min {what} ({max(times):.0f} s the longest)"
    section = (f"### {name}: {task.title or task.bundle}\n\n{settings}.{' ' + note if note else ''}\n\n"
               f"{table}\n\n![{name}]({name}/label_efficiency.png)\n")
    _write_text(out / name / "table.md", section)
    logger.info("%s:\n%s", name, table)
    return section


def _write_results(out: Path, weights_names: Sequence[str], sections: Sequence[str]) -> Path:
    """``OUT/results.md``: the tasks' sections under one header naming the pretrained encoder file(s)."""
    names = ", ".join(f"`{n}`" for n in dict.fromkeys(weights_names)) or "no pretrained encoder"
    header = (f"## Label efficiency: {names}\n\nMean ± standard deviation over seeds; the rows "
              "`arm - random` are paired differences (same seed, same label subset).\n\n")
    _write_text(out / "results.md", header + "\n".join(sections))
    return out / "results.md"


def _image_size(bundle: str, size: int) -> Any:
    """The bundles' spelling of the image size: ``[H, W]`` for segmentation, one int for classification."""
    return int(size) if bundle == "openus_cls" else [int(size), int(size)]


def run_foundation_study(
    weights: str | os.PathLike,
    output_dir: str | os.PathLike,
    sources: str | os.PathLike,
    tasks: Sequence[str] = tuple(TASKS),
    arms: Sequence[str] = DEFAULT_ARMS,
    ratios: Sequence[float] = (0.1,),
    seeds: Sequence[int] = (0, 1, 2),
    max_epochs: int = 12,
    image_size: int = 96,
    batch_size: int = 8,
    val_interval: int = 4,
    ablation: str | os.PathLike | None = None,
    ablation_ratios: Sequence[float] = (0.1,),
    config_files: Mapping[str, Sequence[str]] | Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
    resume: bool = True,
    runner: Callable[..., None] | None = None,
) -> dict[str, Any]:
    """Run the matrix tasks x arms x ratios x seeds, one bundle subprocess (one thread) per run; write the tables.

    Args:
        weights: the pretrained encoder file (e.g. ``weights/openus_us_small.pt``).
        output_dir: the study folder (``TASK/`` per task, ``results.md``).
        sources: the prepared data sets, one folder per :attr:`StudyTask.source` (the ``corpus`` command's
            ``sources/``).
        tasks: names in :data:`TASKS`.
        arms: names in :data:`ARMS` (``baseline``: the task's MONAI network).
        ratios: label ratios (of the ``training`` list).
        seeds: seeds (label subset, initialisation, augmentation).
        max_epochs: epochs of every run.
        image_size: side of the square training images.
        batch_size: batch size of every run.
        val_interval: validate every N epochs (the best validation checkpoint is the one tested; make
            ``max_epochs`` a multiple of it, so that the last epoch is validated).
        ablation: a second encoder file, run as the ``ablation`` arm at ``ablation_ratios``.
        ablation_ratios: label ratios of the ablation arm.
        config_files: extra config files for every bundle (e.g. ``["configs/tiny.json"]``), or per bundle name.
        overrides: more bundle overrides for every run (after the study's own).
        resume: reuse finished runs with the same configs and overrides.
        runner: replaces the bundle runs (see ``run_label_efficiency``; for tests).

    Returns:
        ``{"results": path of results.md, "tasks": {task: {"csv", "plot", "table", "rows"}}}``.

    Raises:
        ValueError: an unknown task or arm.
        FileNotFoundError: a task's data set or the weights do not exist.
    """
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; the study's tasks are {list(TASKS)}")
    out = Path(output_dir).resolve()
    report: dict[str, Any] = {"tasks": {}}
    sections = []
    for name in tasks:
        task = TASKS[name]
        data = Path(sources) / task.source
        if not (data / "datalist.json").is_file():
            raise FileNotFoundError(f"task {name}: no prepared data set at {data} (datalist.json; see the prepare / corpus commands)")
        common = {
            "dataset_dir": str(data.resolve()), "max_epochs": int(max_epochs), "batch_size": int(batch_size),
            "image_size": _image_size(task.bundle, image_size), "val_interval": int(val_interval),
            "num_workers": 0, "num_threads": 1, "cache_rate": 1.0, **task.overrides, **dict(overrides or {}),
        }
        extra = config_files.get(task.bundle, ()) if isinstance(config_files, Mapping) else config_files
        result = run_label_efficiency(
            task.bundle, out / name, ratios=list(ratios), seeds=list(seeds),
            pretrained=study_arms(task, weights, arms, ablation, ablation_ratios),
            config_files=list(extra), overrides=common, metrics=[task.metric], resume=resume, runner=runner,
            title=f"{name}: {max_epochs} epochs, {image_size} px",
        )
        settings = f"{max_epochs} epochs, {image_size} px, batch {batch_size}, seeds {list(seeds)}"
        section = _write_task_section(out, name, result["rows"], settings, f"Test list: `{data / 'datalist.json'}` `test`.")
        sections.append(section)
        report["tasks"][name] = {"csv": result["csv"], "plot": result["plot"], "table": str(out / name / "table.md"),
                                 "rows": result["rows"]}
    report["results"] = str(_write_results(out, [Path(weights).name], sections))
    return report


def merge_foundation_studies(study_dirs: Sequence[str | os.PathLike], output_dir: str | os.PathLike) -> dict[str, Any]:
    """Join finished foundation studies into one table per task (e.g. label ratio 0.1 from one study, 0.25 and 1.0
    from later ones): ``OUTPUT/TASK/`` gets the joined ``label_efficiency.csv``, its plot and ``table.md``, and
    ``OUTPUT/results.md`` combines the tasks. Nothing is run; the studies are only read.

    Args:
        study_dirs: folders written by :func:`run_foundation_study` (``TASK/label_efficiency.csv`` each).
        output_dir: where the joined tables go (not one of ``study_dirs``).

    Returns:
        ``{"results": path of results.md, "tasks": {task: {"csv", "plot", "table", "rows"}}}``.

    Raises:
        ValueError: no study given, the output is one of the studies, a study holds no task of :data:`TASKS`,
            or one run (task, arm, label ratio, seed) is in two studies.
    """
    studies = [Path(d) for d in study_dirs]  # named as given in the tables
    out = Path(output_dir).resolve()
    if not studies:
        raise ValueError("give at least one study folder to merge")
    if out in [s.resolve() for s in studies]:
        raise ValueError(f"the output folder {out} is one of the studies; merge into a new folder")
    report: dict[str, Any] = {"tasks": {}}
    sections, weights_names = [], []
    for study in studies:
        if not any((study / name / "label_efficiency.csv").is_file() for name in TASKS):
            raise ValueError(f"{study}: no TASK/label_efficiency.csv of the tasks {list(TASKS)}; not a foundation study")
    for name, task in TASKS.items():
        rows: list[dict[str, Any]] = []
        origin: dict[tuple[str, float, int], Path] = {}
        for study in studies:
            csv_file = study / name / "label_efficiency.csv"
            if not csv_file.is_file():
                continue
            for row in read_study_csv(csv_file):
                row["seed"] = int(row["seed"])
                key = (row["name"], float(row["label_ratio"]), row["seed"])
                if key in origin:
                    raise ValueError(f"task {name}: the run {key} (arm, label ratio, seed) is in both {origin[key]} and {csv_file}")
                origin[key] = csv_file
                rows.append(row)
        if not rows:
            continue
        weights_names += [Path(r["pretrained"]).name for r in rows if r["name"] == "openus" and r.get("pretrained")]
        with atomic_path(out / name / "label_efficiency.csv") as tmp:
            write_csv(tmp, rows)
        plot = plot_label_efficiency(rows, [task.metric], out / name / "label_efficiency.png", title=f"{name} (merged)")
        sources = ", ".join(f"`{p}`" for p in dict.fromkeys(origin.values()))
        sections.append(_write_task_section(out, name, rows, f"Merged from {sources}"))
        report["tasks"][name] = {"csv": str(out / name / "label_efficiency.csv"), "plot": str(plot),
                                 "table": str(out / name / "table.md"), "rows": rows}
    report["results"] = str(_write_results(out, weights_names, sections))
    return report
