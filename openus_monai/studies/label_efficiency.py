"""Label-efficiency study: run a bundle over label ratios, seeds and encoder initialisations; tabulate and plot.

Works with any bundle of this project that follows the shared conventions: ``configs/train.json`` and
``configs/evaluate.json`` (merged after it), ids ``label_ratio``, ``seed``, ``pretrained``, ``ckpt_dir`` and
``output_dir``, and an evaluation that writes ``output_dir/metrics.json`` (numbers; keys starting with
``n_`` are counts). Segmentation reports ``dice``/``iou``/``hd95``, classification ``accuracy``/``f1``; the
study plots whatever numeric keys it finds (or those asked for).

An arm (one column of the comparison) is an encoder initialisation and, optionally, its own bundle options:
``{"pretrained": FILE, "freeze_encoder": True}`` (a frozen encoder), ``{"config_file": "configs/baselines/
basicunet.json"}`` (another network), ``{"pretrained": FILE2, "ratios": [0.1]}`` (an ablation at one ratio);
see :func:`normalize_arms`.

Each run (one arm, ratio and seed) gets its own folder ``output_dir/NAME/r{ratio}_s{seed}`` with
``models/``, ``eval/``, ``run.log`` and ``run.json`` (what defined it); by default each run (training, then
evaluation) is a fresh Python process (:mod:`openus_monai.studies.bundle_run`), so a crash or memory growth in
one run cannot affect the next.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openus_monai.io import atomic_write_json

__all__ = [
    "DEFAULT_RATIOS",
    "LabelEfficiencyRun",
    "StudyArm",
    "bundle_command",
    "config_digests",
    "format_mean_std",
    "normalize_arms",
    "normalize_pretrained",
    "plot_label_efficiency",
    "run_bundle_workflow",
    "run_label_efficiency",
    "run_separately",
    "same_record",
    "summarize_runs",
    "write_csv",
]

logger = logging.getLogger(__name__)

#: the paper's label ratios (Fig. 5)
DEFAULT_RATIOS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
#: an arm ``"random:CHECKPOINT"``: the checkpoint's encoder architecture, randomly initialised (the bundles' ``init``)
RANDOM_PREFIX = "random:"


@dataclass(frozen=True)
class StudyArm:
    """One arm of the study: an encoder initialisation and the bundle options that go with it.

    Attributes:
        pretrained: a checkpoint, ``"random:CHECKPOINT"`` (its architecture with random weights) or None (the
            bundle's own encoder, random weights).
        config_files: config files merged after the study's, for this arm only (e.g. a baseline network).
        overrides: bundle overrides for this arm only (e.g. ``{"freeze_encoder": True}``).
        ratios: the label ratios this arm runs at (None: the study's), e.g. ``(0.1,)`` for an ablation row.
    """

    pretrained: str | None = None
    config_files: tuple[str, ...] = ()
    overrides: Mapping[str, Any] = field(default_factory=dict)
    ratios: tuple[float, ...] | None = None


class LabelEfficiencyRun:
    """One cell of the study: an arm, a label ratio and a seed.

    Attributes:
        name: short name of the arm (``"random"``, ``"openus"``, ``"openus_frozen"``...).
        pretrained: the arm's initialisation as :func:`normalize_arms` spells it: a checkpoint,
            ``"random:CHECKPOINT"`` (its architecture with random weights) or None (the bundle's own encoder).
        label_ratio: fraction of training labels.
        seed: the bundle's ``seed`` (label subset, validation hold-out, initialisation, augmentation).
        run_dir: folder of this run's checkpoints, evaluation and logs.
        arm_overrides: the arm's own bundle overrides (below the run's own).
    """

    def __init__(self, name: str, pretrained: str | None, label_ratio: float, seed: int, run_dir: Path,
                 arm_overrides: Mapping[str, Any] | None = None) -> None:
        self.name, self.pretrained = name, pretrained
        self.label_ratio, self.seed, self.run_dir = float(label_ratio), int(seed), Path(run_dir)
        self.arm_overrides = dict(arm_overrides or {})

    @property
    def checkpoint(self) -> str | None:
        """The bundle's ``pretrained`` value: the checkpoint file (also for a random-init arm), or None."""
        return self.pretrained.removeprefix(RANDOM_PREFIX) if self.pretrained else None

    @property
    def init(self) -> str:
        """The bundle's ``init`` value: ``"random"`` for a ``random:CHECKPOINT`` arm, else ``"pretrained"``."""
        return "random" if self.pretrained and self.pretrained.startswith(RANDOM_PREFIX) else "pretrained"

    @property
    def overrides(self) -> dict[str, Any]:
        """The bundle overrides that define this run: the arm's, then the run's own."""
        return {
            **self.arm_overrides,
            "label_ratio": self.label_ratio,
            "seed": self.seed,
            "pretrained": self.checkpoint,
            "init": self.init,
            "ckpt_dir": str(self.run_dir / "models"),
            "output_dir": str(self.run_dir / "eval"),
        }

    @property
    def metrics_file(self) -> Path:
        return self.run_dir / "eval" / "metrics.json"

    @property
    def record_file(self) -> Path:
        """``run.json``: the configs and overrides of the finished run (resume reuses a run only when they match)."""
        return self.run_dir / "run.json"

    def __repr__(self) -> str:
        return f"LabelEfficiencyRun({self.name!r}, ratio={self.label_ratio}, seed={self.seed})"


def normalize_arms(arms: str | Sequence[Any] | Mapping[str, Any] | None) -> dict[str, StudyArm]:
    """``{name: StudyArm}`` from a mapping ``{name: arm}``, a list of arms or one arm.

    An arm is

    - a checkpoint (its encoder, pretrained); ``"random:CHECKPOINT"`` (the same encoder, randomly initialised:
      the control arm); ``""``/None/``"none"``/``"random"`` (the bundle's configured encoder, random init);
    - or a mapping with ``pretrained`` (as above), ``init`` (``"pretrained"`` / ``"random"``), ``config_file``
      (one or a list, merged after the study's config files), ``ratios`` (run only at these label ratios),
      ``overrides`` (a dict) and any other key as a bundle override, e.g. ``{"pretrained": "w.pt",
      "freeze_encoder": True}`` or ``{"config_file": "configs/baselines/basicunet.json"}``.

    An unnamed arm is named after its checkpoint (``encoder.pt`` -> ``encoder``, a random-init arm
    ``encoder_random``) or ``random``, made unique with a suffix when needed.

    Raises:
        FileNotFoundError: a checkpoint does not exist.
        ValueError: an ``init`` other than ``pretrained`` / ``random``, or a ratio outside (0, 1].
    """
    if arms is None or isinstance(arms, (str, os.PathLike)) or (isinstance(arms, Mapping) and _is_arm_mapping(arms)):
        arms = [arms]
    items = list(arms.items()) if isinstance(arms, Mapping) else [(None, a) for a in arms]
    out: dict[str, StudyArm] = {}
    for name, arm in items:
        init, options = "pretrained", {}
        if isinstance(arm, Mapping):
            options = dict(arm)
            arm, init = options.pop("pretrained", None), str(options.pop("init", "pretrained")).lower()
            if init not in ("pretrained", "random"):
                raise ValueError(f"init must be 'pretrained' or 'random', got {init!r}")
        path = None if arm is None else str(arm).strip()
        if path is not None and path.startswith(RANDOM_PREFIX):
            path, init = path.removeprefix(RANDOM_PREFIX), "random"
        if path is None or path.lower() in ("", "none", "null", "random"):
            path = None
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"pretrained checkpoint {path} does not exist")
        random_file = path is not None and init == "random"
        base = str(name) if name else ("random" if path is None else Path(path).name.split(".")[0] + ("_random" if random_file else ""))
        unique, k = base, 2
        while unique in out:
            unique, k = f"{base}_{k}", k + 1
        configs = options.pop("config_file", None) or ()
        ratios = options.pop("ratios", None)
        if ratios is not None:
            ratios = tuple(float(r) for r in (ratios if isinstance(ratios, (list, tuple)) else [ratios]))
            if not ratios or any(not 0.0 < r <= 1.0 for r in ratios):
                raise ValueError(f"arm {unique}: ratios must be in (0, 1], got {list(ratios)}")
        overrides = {**dict(options.pop("overrides", None) or {}), **options}
        out[unique] = StudyArm(
            pretrained=RANDOM_PREFIX + path if random_file else path,
            config_files=tuple(str(c) for c in (configs if isinstance(configs, (list, tuple)) else [configs])),
            overrides=overrides,
            ratios=ratios,
        )
    return out


def normalize_pretrained(pretrained: str | Sequence[Any] | Mapping[str, Any] | None) -> dict[str, str | None]:
    """``{name: initialisation}`` of :func:`normalize_arms`: ``CHECKPOINT``, ``"random:CHECKPOINT"`` or None."""
    return {name: arm.pretrained for name, arm in normalize_arms(pretrained).items()}


def _is_arm_mapping(value: Mapping[str, Any]) -> bool:
    """Whether a mapping is one arm (``{"pretrained": ..., "freeze_encoder": ...}``) rather than ``{name: arm}``:
    it has ``pretrained`` or ``config_file`` and that value is not itself an arm mapping."""
    keys = [k for k in ("pretrained", "config_file") if k in value]
    return bool(keys) and not any(isinstance(value[k], Mapping) for k in keys)


def _cli_value(value: Any) -> str:
    """A value as ``monai.bundle`` (python-fire) parses it back."""
    if value is None:
        return "None"
    if isinstance(value, str):
        return value
    return repr(value)


def bundle_command(
    bundle_root: str | os.PathLike,
    config_files: Sequence[str | os.PathLike],
    overrides: Mapping[str, Any],
    run_id: str = "run",
    python: str = sys.executable,
) -> list[str]:
    """The ``python -m monai.bundle run`` command line for a bundle, its config files and overrides."""
    root = Path(bundle_root)
    cmd = [python, "-m", "monai.bundle", "run", run_id, "--meta_file", str(root / "configs" / "metadata.json"),
           "--config_file", repr([str(c) for c in config_files])]
    logging_conf = root / "configs" / "logging.conf"
    if logging_conf.is_file():
        cmd += ["--logging_file", str(logging_conf)]
    for key, value in {"bundle_root": str(root), **overrides}.items():
        cmd += [f"--{key}", _cli_value(value)]
    return cmd


def run_bundle_workflow(
    bundle_root: str | os.PathLike, config_files: Sequence[str], overrides: Mapping[str, Any], logging_file: str | None = None
) -> None:
    """Run a bundle's configs in this process (``ConfigWorkflow``: initialize, run, finalize).

    Overrides that are None are left out, as ``python -m monai.bundle run`` leaves them out: the config's
    value stays (e.g. ``pretrained: None``, the bundle's own encoder).

    Args:
        bundle_root: the bundle folder (its ``configs/metadata.json``).
        config_files: the config files, merged in order.
        overrides: ``{id: value}`` overrides.
        logging_file: a logging config to apply (the bundle's ``logging.conf``), or None.
    """
    from monai.bundle import ConfigWorkflow

    root = Path(bundle_root)
    workflow = ConfigWorkflow(
        config_file=[str(c) for c in config_files],
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=logging_file,
        workflow_type="train",
        **{"bundle_root": str(root), **{k: v for k, v in overrides.items() if v is not None}},
    )
    workflow.initialize()
    try:
        workflow.run()
    finally:
        workflow.finalize()


def run_separately(bundle_root: Path, steps: Sequence[Sequence[str]], overrides: Mapping[str, Any], run_dir: Path) -> float:
    """Train and evaluate in one fresh Python process (:mod:`openus_monai.studies.bundle_run`), logging to
    ``run_dir/run.log``; the log starts with the equivalent ``python -m monai.bundle run`` commands.

    Returns:
        the process's CPU seconds (user + system): its wall time on a core of its own, on a shared machine.
    """
    spec = run_dir / "bundle_run.json"
    atomic_write_json({"bundle_root": str(bundle_root), "steps": [{"config_files": list(c)} for c in steps],
                       "overrides": dict(overrides)}, spec)
    log_file = run_dir / "run.log"
    with open(log_file, "w", encoding="utf-8") as log:
        for configs, run_id in zip(steps, ("training", "run")):
            log.write("# equivalent: " + " ".join(bundle_command(bundle_root, configs, overrides, run_id)) + "\n")
        log.flush()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run([sys.executable, "-m", "openus_monai.studies.bundle_run", str(spec)], stdout=log,
                              stderr=subprocess.STDOUT, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        tail = "".join(log_file.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-25:])
        raise RuntimeError(f"bundle run failed (exit {proc.returncode}); log: {log_file}\n{tail}")
    return cpu_s


def _numeric(summary: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def summarize_runs(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and standard deviation (sample, ``ddof=1``; 0 for one seed) of each metric over seeds.

    Args:
        rows: one dict per run with ``name``, ``label_ratio`` and the metric values.
        metrics: metric keys to summarise; non-finite values are left out.

    Returns:
        one dict per ``(name, label_ratio)``, sorted, with ``n_seeds``, ``<metric>_mean``, ``<metric>_std``.
    """
    groups: dict[tuple[str, float], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["name"], float(row["label_ratio"])), []).append(row)
    out = []
    for (name, ratio), members in sorted(groups.items()):
        entry: dict[str, Any] = {"name": name, "label_ratio": ratio, "n_seeds": len(members)}
        for m in metrics:
            values = [float(r[m]) for r in members if r.get(m) is not None and math.isfinite(float(r[m]))]
            mean = sum(values) / len(values) if values else float("nan")
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
            entry[f"{m}_mean"], entry[f"{m}_std"] = mean, (std if values else float("nan"))
        out.append(entry)
    return out


def format_mean_std(mean: float, std: float, n: int, digits: int = 3, signed: bool = False) -> str:
    """``mean ± std`` for a table cell; the mean alone over one seed (where a spread of 0 would mislead), ``-``
    where the mean is not finite."""
    if not math.isfinite(mean):
        return "-"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text if n < 2 else f"{text} ± {std:.{digits}f}"


def plot_label_efficiency(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], path: str | os.PathLike, title: str = "Label efficiency"
) -> Path:
    """One panel per metric: mean over seeds vs label ratio per arm, +- one standard deviation (error bars, and a
    band over several ratios) and the single runs as dots (the picture of OpenUS Fig. 5); the arms are drawn
    side by side (0.01 apart) at each ratio. Written with matplotlib's Agg backend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize_runs(rows, metrics)
    names = list(dict.fromkeys(r["name"] for r in rows))  # the arms in study order
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, m in zip(axes.flat, metrics):
        for i, name in enumerate(names):
            colour = f"C{i}"
            dodge = (i - (len(names) - 1) / 2) * 0.01  # arms side by side at each ratio, not on top of each other
            pts = [s for s in summary if s["name"] == name]
            x = [s["label_ratio"] + dodge for s in pts]
            mean = [s[f"{m}_mean"] for s in pts]
            std = [s[f"{m}_std"] for s in pts]
            ax.errorbar(x, mean, yerr=std, fmt="-o", color=colour, capsize=3, label=name)
            if len(x) > 1:
                ax.fill_between(x, [a - b for a, b in zip(mean, std)], [a + b for a, b in zip(mean, std)], color=colour, alpha=0.2)
            single = [(r["label_ratio"] + dodge, r[m]) for r in rows if r["name"] == name and r.get(m) is not None]
            if single:
                ax.scatter(*zip(*single), s=10, color=colour, alpha=0.5)
        ax.set_xlabel("label ratio")
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
    axes[0][0].legend(title="arm", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows as a CSV with a header; the columns are every key in first-seen order (a row lacking one leaves it empty)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


#: the columns of a study row that are not metrics
_ROW_KEYS = ("name", "pretrained", "init", "config", "label_ratio", "seed", "wall_s", "cpu_s", "run_dir")


def _resolve_configs(config_files: Sequence[str | os.PathLike], bundle_root: Path) -> list[str]:
    """Config files as absolute paths: relative ones are looked up in the working directory, then in the bundle.

    Raises:
        FileNotFoundError: a file is in neither place.
    """
    found = []
    for c in config_files or ():
        p = Path(c)
        found.append(str(p.resolve() if p.is_file() else (bundle_root / p).resolve()))
        if not Path(found[-1]).is_file():
            raise FileNotFoundError(f"config file {c} not found (looked in the working directory and {bundle_root})")
    return found


def _sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def config_digests(config_files: Sequence[str | os.PathLike]) -> list[str]:
    """sha256 of each config file: a run record holds them, so that a config edited under the same name is
    another run (resume compares records with :func:`same_record`)."""
    return [_sha256(f) for f in config_files]


def same_record(done: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """Whether a finished run's record (``done``, as read back from its JSON file) holds every entry of ``record``
    (compared as JSON holds them: tuples as lists, keys as strings)."""
    return all(done.get(k) == json.loads(json.dumps(v)) for k, v in record.items())


def _finished(run: LabelEfficiencyRun, record: Mapping[str, Any]) -> bool:
    """Whether ``run`` finished with exactly these configs, overrides and checkpoint (its ``run.json`` says so)."""
    if not (run.metrics_file.is_file() and run.record_file.is_file()):
        return False
    same = same_record(json.loads(run.record_file.read_text(encoding="utf-8")), record)
    if not same:
        logger.info("%s: finished with other configs or overrides than now; running it again", run)
    return same


def run_label_efficiency(
    bundle: str | os.PathLike,
    output_dir: str | os.PathLike,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seeds: Sequence[int] = (0, 1, 2),
    pretrained: str | Sequence[str | None] | Mapping[str, str | None] | None = None,
    config_files: Sequence[str | os.PathLike] = (),
    overrides: Mapping[str, Any] | None = None,
    metrics: Sequence[str] | None = None,
    resume: bool = False,
    in_process: bool = False,
    title: str | None = None,
    runner: Callable[[LabelEfficiencyRun, list[str], list[str], Mapping[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate ``bundle`` for every (arm, label ratio, seed); write a CSV and a plot.

    Per run: ``train.json`` (+ ``config_files`` + the arm's config files) with ``run training``, then the same
    plus ``evaluate.json`` with ``run``; ``overrides``, then the arm's overrides, then ``label_ratio``,
    ``seed``, ``pretrained``, ``init``, ``ckpt_dir`` and ``output_dir`` are given to both. The run's
    ``eval/metrics.json`` becomes a row of the table (with the run's wall time and, run in a subprocess, its CPU
    time: on a shared machine, the better measure of what the run costs on a core of its own).

    Args:
        bundle: bundle folder (or a bundle name found by ``resolve_bundle_root``, e.g. ``"openus_seg"``).
        output_dir: study folder: ``label_efficiency.csv`` (one row per run), ``label_efficiency_summary.csv``
            (mean and std over seeds), ``label_efficiency.png`` and the run folders.
        ratios: label ratios in (0, 1].
        seeds: seeds; the spread over seeds is the band in the plot.
        pretrained: the arms: ``{name: arm}``, a list of arms, one arm; an arm is a checkpoint,
            ``"random:CHECKPOINT"`` (same encoder, random weights), ``""``/None (the bundle's encoder, random
            init) or a mapping with its own options (``config_file``, ``ratios``, bundle overrides such as
            ``freeze_encoder``); see :func:`normalize_arms`. Default: random init only.
        config_files: extra config files merged after ``train.json`` (e.g. ``configs/tiny.json``); relative
            paths are looked up in the working directory, then in the bundle folder.
        overrides: more bundle overrides for every run, e.g. ``{"max_epochs": 50, "dataset_dir": "/data/busi"}``.
        metrics: metric keys to tabulate and plot (default: every number in ``metrics.json`` except ``n_*``).
        resume: reuse a finished run (``eval/metrics.json`` and ``run.json`` with the same configs, overrides
            and checkpoint contents) instead of running it again; an unfinished or changed run starts afresh.
        in_process: run the bundle workflows in this process (``ConfigWorkflow``) instead of subprocesses.
        title: the plot's title (default: "Label efficiency: BUNDLE").
        runner: replace the bundle runs by ``runner(run, train_configs, evaluate_configs, overrides)``,
            which must write ``run.metrics_file`` (for tests and other schedulers).

    Returns:
        ``{"csv", "summary_csv", "plot", "rows", "summary", "metrics"}``.

    Raises:
        ValueError: a ratio outside (0, 1], no ratios or seeds, or no metric found.
        RuntimeError: a bundle run failed (its log is named).
    """
    from openus_monai.bundle import resolve_bundle_root

    bundle_root = Path(bundle)
    if not bundle_root.is_dir():  # a name such as "openus_seg"
        bundle_root = Path(resolve_bundle_root(str(bundle)))
    bundle_root = bundle_root.resolve()
    for name in ("train.json", "evaluate.json", "metadata.json"):
        if not (bundle_root / "configs" / name).is_file():
            raise FileNotFoundError(f"{bundle_root} is not a bundle with configs/{name}")
    ratios = [float(r) for r in (ratios if isinstance(ratios, (list, tuple)) else [ratios])]
    seeds = [int(s) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds])]
    if not ratios or not seeds:
        raise ValueError("give at least one label ratio and one seed")
    bad = [r for r in ratios if not 0.0 < r <= 1.0]
    if bad:
        raise ValueError(f"label ratios must be in (0, 1], got {bad}")
    arms = normalize_arms(pretrained)
    train_base = [str(bundle_root / "configs" / "train.json"), *_resolve_configs(config_files, bundle_root)]
    arm_configs = {name: _resolve_configs(arm.config_files, bundle_root) for name, arm in arms.items()}
    # a checkpoint rewritten under the same name (a later export) is another run: resume compares contents
    digests = {f: _sha256(f) for f in {a.pretrained.removeprefix(RANDOM_PREFIX) for a in arms.values() if a.pretrained}}
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)

    runs = [
        LabelEfficiencyRun(name, arm.pretrained, r, s, out / name / f"r{r:g}_s{s}", arm.overrides)
        for name, arm in arms.items() for r in (arm.ratios or ratios) for s in seeds
    ]
    rows: list[dict[str, Any]] = []
    for i, run in enumerate(runs, 1):
        train_cfgs = [*train_base, *arm_configs[run.name]]
        eval_cfgs = [*train_cfgs, str(bundle_root / "configs" / "evaluate.json")]
        run_overrides = {**dict(overrides or {}), **run.overrides}
        record = {"train_configs": train_cfgs, "evaluate_configs": eval_cfgs, "overrides": run_overrides,
                  "config_sha256": config_digests(eval_cfgs), "pretrained_sha256": digests.get(run.checkpoint)}
        if resume and _finished(run, record):
            logger.info("[%d/%d] %s: reusing %s", i, len(runs), run, run.metrics_file)
        else:
            start = time.time()
            logger.info("[%d/%d] %s: training and evaluating in %s", i, len(runs), run, run.run_dir)
            for stale in (run.record_file, run.metrics_file):
                stale.unlink(missing_ok=True)
            shutil.rmtree(run.run_dir / "models", ignore_errors=True)  # a fresh start, not an older run's checkpoints
            cpu_s = None
            if runner is not None:
                runner(run, train_cfgs, eval_cfgs, run_overrides)
            elif in_process:
                run_bundle_workflow(bundle_root, train_cfgs, run_overrides)
                run_bundle_workflow(bundle_root, eval_cfgs, run_overrides)
            else:
                cpu_s = run_separately(bundle_root, [train_cfgs, eval_cfgs], run_overrides, run.run_dir)
            if not run.metrics_file.is_file():
                raise RuntimeError(f"{run}: the evaluation wrote no {run.metrics_file}")
            timing = {"wall_s": round(time.time() - start, 1), "cpu_s": None if cpu_s is None else round(cpu_s, 1)}
            atomic_write_json({**record, **timing}, run.record_file)
            logger.info("[%d/%d] %s: done in %.0f s", i, len(runs), run, time.time() - start)
        summary = json.loads(run.metrics_file.read_text(encoding="utf-8"))
        done = json.loads(run.record_file.read_text(encoding="utf-8")) if run.record_file.is_file() else {}
        rows.append({"name": run.name, "pretrained": run.checkpoint or "", "init": run.init,
                     "config": ";".join(Path(c).name for c in arm_configs[run.name]), "label_ratio": run.label_ratio,
                     "seed": run.seed, **_numeric(summary), "wall_s": done.get("wall_s"), "cpu_s": done.get("cpu_s"),
                     "run_dir": str(run.run_dir)})

    found = [k for k in rows[0] if k not in _ROW_KEYS and not k.startswith("n_")]
    chosen = list(metrics) if metrics else found
    missing = [m for m in chosen if all(m not in r for r in rows)]
    if missing or not chosen:
        raise ValueError(f"metrics {missing or chosen} not in the runs' metrics.json (found: {found})")
    summary_rows = summarize_runs(rows, chosen)
    csv_path, summary_path = out / "label_efficiency.csv", out / "label_efficiency_summary.csv"
    write_csv(csv_path, rows)
    write_csv(summary_path, summary_rows)
    plot = plot_label_efficiency(rows, chosen, out / "label_efficiency.png", title=title or f"Label efficiency: {bundle_root.name}")
    logger.info("label-efficiency table %s, summary %s, plot %s", csv_path, summary_path, plot)
    return {"csv": str(csv_path), "summary_csv": str(summary_path), "plot": str(plot), "rows": rows,
            "summary": summary_rows, "metrics": chosen}
