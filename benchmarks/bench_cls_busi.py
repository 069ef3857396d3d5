"""BUSI classification in a fixed wall-clock budget: OpenUSClassifier (random init, fine-tune) vs MONAI DenseNet121.

Both models run through the classification bundle's own configs (``bundles/openus_cls/configs/train.json``
then ``evaluate.json``): same BUSI split (546 train / 78 validation / 156 test), same transforms and
augmentation, loss (class-weighted cross-entropy), optimizer (AdamW), batch size and image size. Only
``network_def`` differs. Each model trains for ``--budget-s`` seconds of wall-clock time (validation on the
78 validation images after every epoch counts inside the budget; a cosine learning-rate schedule runs over
the budget instead of over epochs); the checkpoint with the best validation macro-F1 is then evaluated once
on the 156 test images. Nothing is tuned on the test split. Each model runs in its own process.

    python -m benchmarks.bench_cls_busi [--budget-s 240] [--image-size 64] [--batch-size 16] [--threads 1]
        [--encoder '{"depths": [1, 1, 2, 1], "dims": 32}'] [--seed 0] [--busi ../shared/data/busi]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._measure import run_isolated

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "openus_cls" / "configs"
DEFAULT_BUSI = REPO.parent / "shared" / "data" / "busi"
MODELS = ("openus", "densenet121")
DENSENET = {"_target_": "DenseNet121", "spatial_dims": 2, "in_channels": "@in_channels", "out_channels": "@num_classes"}


class TimeBudgetCosine(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up over ``warmup_fraction`` of the budget, then cosine decay to 0 at ``budget_s`` seconds.

    The clock starts at :meth:`start` (the trainer's STARTED event); progress is wall-clock time, not steps,
    so that models of different speed both end their schedule when their budget ends.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, budget_s: float, warmup_fraction: float = 0.05) -> None:
        self.budget_s, self.warmup_fraction = float(budget_s), float(warmup_fraction)
        self.t0: float | None = None
        super().__init__(optimizer, self._factor)

    def start(self, *_) -> None:
        self.t0 = time.perf_counter()

    def _factor(self, _step: int) -> float:
        progress = 0.0 if self.t0 is None else min(1.0, (time.perf_counter() - self.t0) / self.budget_s)
        if progress < self.warmup_fraction:
            return max(progress / self.warmup_fraction, 0.01)
        return 0.5 * (1.0 + math.cos(math.pi * (progress - self.warmup_fraction) / (1.0 - self.warmup_fraction)))


def _overrides(args: argparse.Namespace, model: str, work: Path) -> dict:
    overrides = {
        "dataset_dir": str(args.busi),
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        "seed": args.seed,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "num_workers": 0,
        "max_epochs": 100000,  # the budget stops training
        "freeze_encoder": False,
        "pretrained": "",
        "encoder": json.loads(args.encoder),
        "amp": False,
    }
    if model == "densenet121":
        overrides["network_def"] = dict(DENSENET)
    return overrides


def run_case(model: str, args: argparse.Namespace) -> dict:
    """Train ``model`` for the budget, evaluate its best-validation checkpoint on the test split; one JSON row."""
    import logging

    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix=f"bench_cls_{model}_"))
    overrides = _overrides(args, model, work)
    common = dict(meta_file=str(CONFIGS / "metadata.json"), logging_file=False, workflow_type=None)
    train = ConfigWorkflow(config_file=[str(CONFIGS / "train.json")], **common, **overrides,
                           lr_scheduler={"_target_": "benchmarks.bench_cls_busi.TimeBudgetCosine",
                                         "optimizer": "@optimizer", "budget_s": args.budget_s})
    train.initialize()
    trainer = train.parser.get_parsed_content("train#trainer")  # builds and caches the data sets first
    evaluator = train.parser.get_parsed_content("validate#evaluator")
    scheduler = train.parser.get_parsed_content("lr_scheduler")
    network = train.parser.get_parsed_content("network_def")
    clock: dict[str, float] = {}

    def start(engine) -> None:
        clock["t0"] = time.perf_counter()
        scheduler.start()

    def check_budget(engine) -> None:
        if time.perf_counter() - clock["t0"] >= args.budget_s:
            engine.terminate()

    trainer.add_event_handler(Events.STARTED, start)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, check_budget)
    train.run()
    train_s = time.perf_counter() - clock["t0"]
    steps_per_epoch = trainer.state.epoch_length
    if trainer.state.iteration % steps_per_epoch:  # stopped inside an epoch: validate what it has learned
        evaluator.run(trainer.state.epoch)
    train.finalize()

    test = ConfigWorkflow(config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")], **common, **overrides)
    test.initialize()
    test.run()
    test.finalize()
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    return {
        "model": model,
        "parameters": sum(p.numel() for p in network.parameters()),
        "epochs": trainer.state.iteration / steps_per_epoch,
        "images_seen": trainer.state.iteration * args.batch_size,
        "train_s": train_s,
        "best_val_macro_f1": evaluator.state.best_metric,
        "best_epoch": evaluator.state.best_metric_epoch,
        **{f"test_{k}": v for k, v in metrics.items()},
    }


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=240.0, help="wall-clock training seconds per model")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--encoder", default='{"depths": [1, 1, 2, 1], "dims": 32}', help="VMamba config (JSON) or preset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--busi", type=Path, default=DEFAULT_BUSI)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--case", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.encoder.lstrip().startswith("{"):
        args.encoder = json.dumps(args.encoder)
    if args.case:
        print(json.dumps(run_case(args.case, args)))
        return
    if not (args.busi / "labels.csv").is_file():
        raise SystemExit(f"BUSI not found at {args.busi} (pass --busi)")

    common = ["--budget-s", str(args.budget_s), "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
              "--threads", str(args.threads), "--encoder", args.encoder, "--seed", str(args.seed), "--busi", str(args.busi)]
    load_before = os.getloadavg()
    rows = [run_isolated("benchmarks.bench_cls_busi", common + ["--case", m]) for m in args.models.split(",")]
    load_after = os.getloadavg()
    print(f"BUSI, its split (546 train / 78 val / 156 test), {args.image_size} x {args.image_size}, batch {args.batch_size}, "
          f"{args.budget_s:.0f} s of training per model, {args.threads} CPU thread(s), seed {args.seed}; best validation "
          f"macro-F1 checkpoint evaluated once on test (torch {torch.__version__}; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after: a shared machine)")
    print("| model | parameters | epochs in budget | best val macro-F1 (epoch) | test accuracy | test macro-F1 | test AUC | test balanced accuracy |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        name = f"OpenUSClassifier {json.loads(args.encoder)} (random init, finetune)" if r["model"] == "openus" else "MONAI DenseNet121"
        print(f"| {name} | {r['parameters'] / 1e6:.2f} M | {r['epochs']:.1f} | {_fmt(r['best_val_macro_f1'])} ({r['best_epoch']}) | "
              f"{_fmt(r['test_accuracy'])} | {_fmt(r['test_macro_f1'])} | {_fmt(r['test_auc'])} | {_fmt(r['test_balanced_accuracy'])} |")


if __name__ == "__main__":
    main()
