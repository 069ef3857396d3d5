"""Compare pretraining recipes (OpenUS, USF-MAE, USFM) on one downstream protocol.

Each recipe pretrains through the pretraining bundle on the same datalist with the same seed and budget
(``max_epochs``), its encoder file (``backbone.pt``, self-describing) is fine-tuned by the segmentation and
classification bundles at the same label ratios and seeds (the label-efficiency runner,
:func:`~openus_monai.studies.label_efficiency.run_label_efficiency`), and one table (CSV + Markdown) and one plot
are written. Every step is resumable: a recipe whose pretraining finished (``pretrain_final.pt``, ``backbone.pt``
and ``pretrain.json`` with the same configs and overrides) and a fine-tuning run that finished with the same configs
and overrides are reused; any other is run again.

Layout of ``output_dir``::

    pretrain/<recipe>/models/backbone.pt        the recipe's encoder
    pretrain/<recipe>/pretrain.json             its configs, overrides and wall seconds (what resume compares)
    <task>/<recipe>/r<ratio>_s<seed>/            a fine-tuning run (label-efficiency layout)
    pretraining.csv                             per recipe: encoder, parameters, seconds (not part of the table)
    compare_recipes.csv, compare_recipes.md     mean and std over seeds per recipe, task, label ratio and metric
    compare_recipes_runs.csv, compare_recipes.png
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from openus_monai.io import atomic_write_json

from .label_efficiency import (  # the study's bundle runners, shared rather than copied
    config_digests,
    format_mean_std,
    plot_label_efficiency,
    run_bundle_workflow,
    run_label_efficiency,
    run_separately,
    same_record,
    summarize_runs,
    write_csv,
)

__all__ = ["RECIPES", "TASKS", "markdown_table", "pretrain_recipe", "run_compare_recipes"]

logger = logging.getLogger(__name__)

#: each recipe's config files at CPU scale, merged after the pretraining bundle's ``train.json``
RECIPES: dict[str, tuple[str, ...]] = {
    "openus": ("recipes/openus.json", "recipes/openus_cpu.json"),
    "usf_mae": ("recipes/usf_mae.json", "recipes/usf_mae_cpu.json"),
    "usfm": ("recipes/usfm.json", "recipes/usfm_cpu.json"),
}
#: the downstream tasks: bundle and the metrics tabulated (the first is the plot's and the Markdown's headline)
TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "segmentation": ("openus_seg", ("dice", "iou", "hd95")),
    "classification": ("openus_cls", ("macro_f1", "accuracy", "auc")),
}


def _bundle_root(name: str) -> Path:
    from openus_monai.bundle import resolve_bundle_root

    return Path(resolve_bundle_root(name)).resolve()


def _config_path(root: Path, name: str | os.PathLike) -> str:
    """A config file as given (when it exists) or inside the bundle's ``configs/``."""
    path = Path(name)
    found = path if path.is_file() else root / "configs" / path
    if not found.is_file():
        raise FileNotFoundError(f"config file {name} not found (looked in the working directory and {root / 'configs'})")
    return str(found.resolve())


def pretrain_recipe(
    recipe: str,
    run_dir: str | os.PathLike,
    recipe_configs: Sequence[str | os.PathLike],
    overrides: Mapping[str, Any],
    resume: bool = True,
    in_process: bool = False,
) -> dict[str, Any]:
    """Pretrain one recipe with the pretraining bundle (``train.json`` + ``recipe_configs``) unless done.

    Args:
        recipe: the recipe's name (a folder of ``run_dir``'s parent).
        run_dir: its folder: ``models/`` (checkpoints, ``backbone.pt``), ``eval/`` and ``run.log``.
        recipe_configs: config files merged after ``train.json`` (bundle-relative or paths).
        overrides: bundle overrides (``dataset_dir``, ``seed``, ``max_epochs``...).
        resume: reuse a finished pretraining: ``pretrain_final.pt`` and ``backbone.pt`` present and its record
            (``pretrain.json``) naming the same config files, with the same contents, and overrides; ``seconds`` is
            then the original run's.
        in_process: run the bundle in this process.

    Returns:
        ``{"recipe", "method" (as the encoder file records it), "backbone", "encoder", "parameters", "seconds", "reused"}``.
    """
    from openus_monai.networks import load_encoder_file

    root = _bundle_root("openus_pretrain")
    run_dir = Path(run_dir)
    models = run_dir / "models"
    backbone, final, record_file = models / "backbone.pt", models / "pretrain_final.pt", run_dir / "pretrain.json"
    configs = [str(root / "configs" / "train.json"), *(_config_path(root, c) for c in recipe_configs)]
    run_overrides = {**dict(overrides), "ckpt_dir": str(models), "output_dir": str(run_dir / "eval")}
    record = {"config_files": configs, "config_sha256": config_digests(configs), "overrides": run_overrides}
    done = json.loads(record_file.read_text(encoding="utf-8")) if record_file.is_file() else {}
    reused = resume and backbone.is_file() and final.is_file() and same_record(done, record)
    if resume and done and not reused:
        logger.info("pretraining %s: the finished run had other configs or overrides than now; running it again", recipe)
    if reused:
        seconds = done["seconds"]
    else:
        for stale in (backbone, final, record_file):
            stale.unlink(missing_ok=True)
        logger.info("pretraining %s in %s", recipe, run_dir)
        start = time.time()
        if in_process:
            run_bundle_workflow(root, configs, run_overrides)
        else:  # one fresh process, logging to run_dir/run.log
            run_separately(root, [configs], run_overrides, run_dir)
        if not backbone.is_file():
            raise RuntimeError(f"pretraining {recipe} wrote no {backbone}")
        seconds = round(time.time() - start, 1)
        atomic_write_json({**record, "seconds": seconds}, record_file)
    encoder, meta = load_encoder_file(backbone)
    return {"recipe": recipe, "method": meta.get("method"), "backbone": str(backbone), "encoder": type(encoder).__name__,
            "parameters": sum(p.numel() for p in encoder.parameters()), "seconds": seconds, "reused": reused}


def markdown_table(summary: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
    """The summary as a Markdown table: one row per recipe, one column per task, metric and label ratio,
    ``mean ± std`` over seeds (``n`` seeds in the header; the mean alone for one seed)."""
    order = [(t, m) for t, (_, metrics) in TASKS.items() for m in metrics]
    columns = sorted({(s["task"], s["metric"], s["label_ratio"], s["n_seeds"]) for s in summary},
                     key=lambda c: (order.index(c[:2]) if c[:2] in order else len(order), c))
    recipes = list(dict.fromkeys(s["recipe"] for s in summary))
    cell = {(s["recipe"], s["task"], s["metric"], s["label_ratio"]): s for s in summary}
    header = ["recipe"] + [f"{t} {m} @{r:g} (n={n})" for t, m, r, n in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for recipe in recipes:
        values = []
        for t, m, r, _ in columns:
            s = cell.get((recipe, t, m, r))
            values.append("" if s is None else format_mean_std(s["mean"], s["std"], s["n_seeds"], digits))
        lines.append("| " + " | ".join([recipe, *values]) + " |")
    return "\n".join(lines) + "\n"


def run_compare_recipes(
    output_dir: str | os.PathLike,
    dataset_dir: str = "",
    recipes: Sequence[str] | Mapping[str, Sequence[str | os.PathLike]] = tuple(RECIPES),
    pretrain_configs: Sequence[str | os.PathLike] = (),
    pretrain_overrides: Mapping[str, Any] | None = None,
    tasks: Mapping[str, str | Mapping[str, Any]] | Sequence[str] = ("segmentation", "classification"),
    ratios: Sequence[float] = (0.1, 1.0),
    seeds: Sequence[int] = (0,),
    downstream_configs: Sequence[str | os.PathLike] = (),
    downstream_overrides: Mapping[str, Any] | None = None,
    random_controls: bool = False,
    resume: bool = True,
    in_process: bool = False,
) -> dict[str, Any]:
    """Pretrain every recipe on the same data, fine-tune each on the same tasks, ratios and seeds; tabulate and plot.

    Args:
        output_dir: the study folder (see the module docstring).
        dataset_dir: pretraining data (a folder or a datalist.json, e.g. the corpus command's output; ""
            for the demo data), the same for every recipe.
        recipes: names of :data:`RECIPES` (their CPU-scale configs), or ``{name: config files}`` (after
            ``train.json`` and ``pretrain_configs``; e.g. two variants of one method under two names).
        pretrain_configs: config files merged after ``train.json`` and before each recipe's (e.g. ``tiny.json``;
            relative to the working directory, else to the pretraining bundle's ``configs/``).
        pretrain_overrides: overrides for every pretraining, the shared budget and seed (e.g. ``{"max_epochs": 5,
            "seed": 0}``); ``dataset_dir`` is set from the argument.
        tasks: task names of :data:`TASKS`, or ``{task: downstream dataset_dir}`` ("" = the demo data), or
            ``{task: {overrides of that task's runs}}`` (after ``downstream_overrides``; e.g. ``dataset_dir``,
            ``image_size``, which the segmentation bundle spells ``[H, W]`` and the classification bundle as one
            int); a list uses each bundle's default data (the demo data).
        ratios: label ratios of the fine-tuning.
        seeds: fine-tuning seeds (the spread over them is the table's ``std``).
        downstream_configs: config files merged after the downstream bundles' ``train.json`` (e.g. ``configs/tiny.json``;
            relative to the working directory, else to each bundle's folder).
        downstream_overrides: overrides for every fine-tuning run (e.g. ``{"max_epochs": 20}``).
        random_controls: also fine-tune each recipe's encoder architecture from random weights (arm ``<recipe>_random``).
        resume: reuse finished pretrainings and fine-tuning runs.
        in_process: run the bundles in this process instead of one subprocess per run.

    Returns:
        ``{"csv", "runs_csv", "markdown", "plot", "pretraining_csv", "summary", "rows", "pretraining"}``.
    """
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    recipe_configs = {r: RECIPES[r] for r in recipes} if not isinstance(recipes, Mapping) else {k: tuple(v) for k, v in recipes.items()}
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; choose from {sorted(TASKS)}")
    task_data = dict(tasks) if isinstance(tasks, Mapping) else {t: None for t in tasks}

    pretraining = [
        pretrain_recipe(
            name, out / "pretrain" / name, [*pretrain_configs, *configs],
            {**dict(pretrain_overrides or {}), "dataset_dir": dataset_dir}, resume=resume, in_process=in_process,
        )
        for name, configs in recipe_configs.items()
    ]
    arms: dict[str, str] = {}
    for p in pretraining:
        arms[p["recipe"]] = p["backbone"]
        if random_controls:
            arms[f"{p['recipe']}_random"] = "random:" + p["backbone"]

    rows: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for task, data in task_data.items():
        bundle, metrics = TASKS[task]
        own = {} if data is None else dict(data) if isinstance(data, Mapping) else {"dataset_dir": data}
        overrides = {**dict(downstream_overrides or {}), **own}
        result = run_label_efficiency(
            bundle, out / task, ratios=list(ratios), seeds=list(seeds), pretrained=arms,
            config_files=list(downstream_configs), overrides=overrides,
            metrics=list(metrics), resume=resume, in_process=in_process,
        )
        for row in result["rows"]:
            rows.append({"recipe": row["name"], "task": task, "label_ratio": row["label_ratio"], "seed": row["seed"],
                         **{f"{task}_{m}": row.get(m) for m in metrics}})
        for s in summarize_runs(result["rows"], metrics):
            for m in metrics:
                summary.append({"recipe": s["name"], "task": task, "label_ratio": s["label_ratio"], "metric": m,
                                "mean": s[f"{m}_mean"], "std": s[f"{m}_std"], "n_seeds": s["n_seeds"]})

    csv_path, runs_path, md_path = out / "compare_recipes.csv", out / "compare_recipes_runs.csv", out / "compare_recipes.md"
    pretraining_path = out / "pretraining.csv"
    write_csv(csv_path, summary)
    write_csv(runs_path, rows)
    write_csv(pretraining_path, pretraining)
    md_path.write_text(markdown_table(summary), encoding="utf-8")
    headline = [f"{t}_{TASKS[t][1][0]}" for t in task_data]
    plot = plot_label_efficiency([{"name": r["recipe"], **r} for r in rows], headline, out / "compare_recipes.png",
                                 title="Pretraining recipes, fine-tuned")
    logger.info("recipe comparison: %s, %s, %s", csv_path, md_path, plot)
    return {"csv": str(csv_path), "runs_csv": str(runs_path), "markdown": str(md_path), "plot": str(plot),
            "pretraining_csv": str(pretraining_path), "summary": summary, "rows": rows, "pretraining": pretraining}
