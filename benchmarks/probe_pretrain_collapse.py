"""Instrumented OpenUS pretraining on BUSI's training split, then k-NN / linear probe vs random init.

Runs the pretraining bundle's configs (``train.json`` + a preset + JSON overrides) for a few epochs on
BUSI's *training* images only, records per-iteration collapse diagnostics of the teacher (entropy of
its centred, sharpened class distribution, largest prototype share, std of its pooled features across
the batch, spread of its raw logits), and at the end compares the teacher encoder with the same
encoder at its initialisation (same seed): DINO's weighted k-NN accuracy and a linear probe on
BUSI's 3 classes, train split -> test split, mean-pooled last-stage features of the whole image
resized to ``global_size``.

    PYTHONPATH=$PWD python benchmarks/probe_pretrain_collapse.py --preset tiny --epochs 6 \
        --overrides '{"center_momentum": 0.9}' --log /tmp/probe.jsonl
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import tempfile
import time

import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.transforms import Compose, LoadImaged, Resized, ScaleIntensityd

from openus_monai.metrics import collapse_diagnostics, knn_accuracy, linear_probe_accuracy
from openus_monai.data import image_readers
from openus_monai.transforms import EnsureGray2Dd

CONFIGS = "bundles/openus_pretrain/configs"
CLASSES = {"normal": 0, "benign": 1, "malignant": 2}


def busi_rows(root: str, split: str) -> list[dict]:
    with open(os.path.join(root, "labels.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split]
    return [{"image": os.path.join(root, r["image"]), "label": CLASSES[r["label"]]} for r in rows]


@torch.no_grad()
def features(encoder: torch.nn.Module, rows: list[dict], size: int, batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled last-stage features ``[N, C_3]`` of whole images resized to ``size``, and labels ``[N]``."""
    load = Compose([
        LoadImaged("image", reader=image_readers(), image_only=True, ensure_channel_first=True),
        EnsureGray2Dd("image"), ScaleIntensityd("image", minv=0.0, maxv=1.0), Resized("image", (size, size)),
    ])
    encoder.eval()
    feats, labels = [], []
    for start in range(0, len(rows), batch):
        items = [load(r) for r in rows[start : start + batch]]
        x = torch.stack([torch.as_tensor(i["image"]) for i in items]).float()
        feats.append(encoder(x)[-1].mean((2, 3)))
        labels += [i["label"] for i in items]
    return torch.cat(feats), torch.tensor(labels)


def evaluate(encoder: torch.nn.Module, train: list[dict], test: list[dict], size: int) -> dict[str, float]:
    xtr, ytr = features(encoder, train, size)
    xte, yte = features(encoder, test, size)
    return {
        "knn20": knn_accuracy(xtr, ytr, xte, yte, k=20),
        "linear": linear_probe_accuracy(xtr, ytr, xte, yte, steps=500, lr=0.01, weight_decay=1e-3),
        "feat_std_ratio": collapse_diagnostics(torch.ones(len(xte), 2) / 2, xte)["feature_std_ratio"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--overrides", default="{}")
    ap.add_argument("--data", default="../shared/data/busi")
    ap.add_argument("--log", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save", default=None, help="write the teacher encoder's state dict here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    parser = ConfigParser()
    parser.read_config([f"{CONFIGS}/train.json", f"{CONFIGS}/{args.preset}.json"])
    tmp = tempfile.mkdtemp()
    parser.update({"dataset_dir": args.data, "max_epochs": args.epochs, "ckpt_dir": tmp, "output_dir": tmp, "num_workers": 0})
    parser.update(json.loads(args.overrides))
    train_rows, test_rows = busi_rows(args.data, "train"), busi_rows(args.data, "test")
    parser["train"]["datalist"] = [{"image": r["image"], "index": i} for i, r in enumerate(train_rows)]
    parser["train"]["handlers"] = [h for h in parser["train"]["handlers"] if "EpochAverage" in str(h.get("_target_")) or "TeacherEMA" in str(h.get("_target_"))]
    torch.manual_seed(parser["seed"])
    net = parser.get_parsed_content("network")
    init_encoder = copy.deepcopy(net.teacher.encoder)
    trainer = parser.get_parsed_content("train#trainer")
    size = parser["global_size"]

    captured: dict = {}

    def hook(module, inputs, output):
        captured["pooled"], captured["cls"] = inputs[0][:, 0].detach(), output[0].detach()
        captured["center"] = net.ibot_loss.center.clone()

    net.teacher.head.register_forward_hook(hook)
    log = open(args.log, "w") if args.log else None
    start = time.time()

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine):
        out = engine.state.output[0]
        probs = F.softmax((captured["cls"] - captured["center"]) / out["teacher_temp"], dim=-1)
        diag = collapse_diagnostics(probs, captured["pooled"])
        row = {"it": engine.state.iteration, "epoch": engine.state.epoch, "t": round(time.time() - start, 1)}
        row |= {k: round(v, 4) for k, v in out.items() if isinstance(v, float)}
        row |= {k: round(v, 4) for k, v in diag.items()}
        row["logit_batch_std"] = round(float(captured["cls"].std(0).mean()), 5)  # raw teacher logits across images
        if log:
            log.write(json.dumps(row) + "\n")
            log.flush()

    @trainer.on(Events.EPOCH_COMPLETED)
    def report(engine):
        m = engine.state.metrics
        print(f"epoch {engine.state.epoch} t={time.time() - start:.0f}s " + " ".join(f"{k}={m[k]:.4f}" for k in sorted(m) if k.startswith("epoch_loss")), flush=True)

    trainer.run()
    result = {"pretrained": evaluate(net.teacher.encoder, train_rows, test_rows, size), "random": evaluate(init_encoder, train_rows, test_rows, size)}
    result["minutes"] = round((time.time() - start) / 60, 1)
    print(json.dumps(result), flush=True)
    if args.save:
        torch.save(net.teacher.encoder.state_dict(), args.save)


if __name__ == "__main__":
    main()
