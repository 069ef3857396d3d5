"""BUSI lesion segmentation in a fixed wall-clock budget: OpenUSSegNet (random init) vs MONAI BasicUNet.

Both models run through the segmentation bundle's own configs (``bundles/openus_seg/configs/train.json``,
then ``evaluate.json``): the BUSI split (546 train / 78 validation / 156 test), the same loading, mask
checks, intensity scaling, resizing, flips and 90-degree rotations, DiceCE loss, AdamW with the same
learning rate and weight-decay rules, batch size and image size. Only ``network_def`` differs (and the
optimizer's parameter list, built by the same ``param_groups`` rules). Each model trains for ``--budget-s``
seconds of wall-clock time, validation after every epoch included; when the budget runs out mid-epoch the
model is validated once more, and the checkpoint with the best validation Dice is evaluated on the 156 test
images at their original resolution (Dice, IoU, HD95 of the lesion; see the bundle README for the
conventions). Nothing is tuned on the test split. Each model runs in its own process, one after the other.

    python -m benchmarks.bench_seg_busi [--budget-s 300] [--image-size 128] [--batch-size 8] [--threads 1]
        [--lr 1e-3] [--encoder '{"depths": [1, 1, 2, 1], "dims": 32}'] [--seed 0] [--busi ../shared/data/busi]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._measure import run_isolated

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "openus_seg" / "configs"
DEFAULT_BUSI = REPO.parent / "shared" / "data" / "busi"
MODELS = ("openus", "basicunet")


class WallClockBudget:
    """Stop training after ``budget_s`` seconds (checked after every iteration); validate once more first,
    so that the last part of the budget can still produce the best checkpoint."""

    def __init__(self, budget_s: float, validator) -> None:
        self.budget_s, self.validator = float(budget_s), validator
        self.t0 = 0.0
        self.elapsed = 0.0
        self.validations = 0

    def attach(self, trainer) -> None:
        from ignite.engine import Events

        trainer.add_event_handler(Events.STARTED, self._start)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._check)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._count)

    def _start(self, engine) -> None:
        self.t0 = time.perf_counter()

    def _count(self, engine) -> None:
        self.validations += 1  # the bundle's ValidationHandler validates after every epoch

    def _check(self, engine) -> None:
        self.elapsed = time.perf_counter() - self.t0
        if self.elapsed >= self.budget_s:
            self.validator.run(engine.state.epoch)  # epoch-end handlers do not run after terminate()
            self.validations += 1
            engine.terminate()


def _overrides(args: argparse.Namespace, model: str, work: Path) -> dict:
    overrides = {
        "dataset_dir": str(args.busi),
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        "seed": args.seed,
        "pretrained": "",
        "encoder": json.loads(args.encoder),
        "decoder_depths": args.decoder_depths,
        "image_size": [args.image_size, args.image_size],
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "num_workers": 0,
        "num_threads": args.threads,
        "cache_rate": 1.0,
        "max_epochs": 100000,  # the wall-clock budget ends training
    }
    if model == "basicunet":
        overrides["network_def"] = {"_target_": "BasicUNet", "spatial_dims": 2, "in_channels": "@in_channels", "out_channels": "@num_classes"}
        overrides["optimizer#params"] = "$openus_monai.networks.param_groups(@network_def, weight_decay=@weight_decay, lr=@learning_rate)"
    return overrides


def _workflow(files: list[str], overrides: dict):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=[str(CONFIGS / f) for f in files], meta_file=str(CONFIGS / "metadata.json"),
                              workflow_type="train", **overrides)
    workflow.initialize()
    return workflow


def run_single(args: argparse.Namespace, model: str) -> dict:
    """Train ``model`` within the budget and evaluate its best checkpoint on the test split (this process)."""
    work = Path(tempfile.mkdtemp(prefix=f"bench_seg_{model}_"))
    overrides = _overrides(args, model, work)
    train = _workflow(["train.json"], overrides)
    trainer = train.parser.get_parsed_content("train#trainer")  # builds (and caches) the data sets first
    network = train.parser.get_parsed_content("network_def")
    budget = WallClockBudget(args.budget_s, train.parser.get_parsed_content("validate#evaluator"))
    budget.attach(trainer)
    train.run()
    train.finalize()
    validator = train.parser.get_parsed_content("validate#evaluator")
    best = validator.state.best_metric
    iterations = trainer.state.iteration

    evaluate = _workflow(["train.json", "evaluate.json"], {**overrides, "output_dir": str(work / "test"), "save_masks": False})
    evaluate.run()
    evaluate.finalize()
    test = json.loads((work / "test" / "metrics.json").read_text())
    return {
        "model": model,
        "params": sum(p.numel() for p in network.parameters()),
        "iterations": iterations,
        "epochs": round(iterations * args.batch_size / len(train.parser.get_parsed_content("train#dataset")), 2),
        "train_s": round(budget.elapsed, 1),
        "validations": budget.validations,
        "best_val_dice": best,
        "test": test,
        "work_dir": str(work),
    }


def _row(r: dict) -> str:
    t = r["test"]
    ips = r["iterations"] * r["batch_size"] / r["train_s"] if r["train_s"] else float("nan")
    return (f"| {r['model']} | {r['params'] / 1e6:.2f} M | {r['iterations']} ({r['epochs']:.1f}) | {ips:.1f} | "
            f"{r['best_val_dice']:.3f} | {t['dice']:.3f} | {t['dice_nonempty']:.3f} | {t['iou']:.3f} | "
            f"{t['hd95']:.1f} ({t.get('n_hd95', t['n_images'])}) |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=300.0, help="training wall-clock seconds per model")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate of both models")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per model (1: the machine is shared)")
    parser.add_argument("--encoder", default='{"depths": [1, 1, 2, 1], "dims": 32}', help="VMamba config of OpenUSSegNet")
    parser.add_argument("--decoder-depths", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--busi", type=Path, default=DEFAULT_BUSI)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    parser.add_argument("--single", choices=MODELS, help=argparse.SUPPRESS)  # internal: one model in this process
    args = parser.parse_args(argv)
    if not (args.busi / "labels.csv").is_file():
        sys.exit(f"BUSI not found at {args.busi} (pass --busi PATH)")
    if args.single:
        print(json.dumps(run_single(args, args.single)))
        return
    passed = [a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("--models")]
    results = []
    for model in args.models.split(","):
        start = time.time()
        load = os.getloadavg()[0]
        result = run_isolated("benchmarks.bench_seg_busi", [*passed, "--single", model])
        result.update(batch_size=args.batch_size, wall_s=round(time.time() - start), load_at_start=round(load, 2))
        results.append(result)
        print(f"{model}: {json.dumps({k: v for k, v in result.items() if k != 'test'})} test={json.dumps(result['test'])}", flush=True)
    print()
    print(f"BUSI segmentation, {args.budget_s:.0f} s training per model, {args.image_size} px, batch {args.batch_size}, "
          f"AdamW lr {args.lr:g}, {args.threads} thread(s), CPU ({os.cpu_count()} cores, shared); test split, 156 images, "
          f"original resolution")
    print("| model | parameters | iterations (epochs) | train images/s | best val Dice | test Dice | "
          "test Dice, lesion images | test IoU | test HD95 px (n) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(_row(r))


if __name__ == "__main__":
    main()
