"""The classification bundle ``bundles/openus_cls`` end to end through ``python -m monai.bundle`` (CPU, tiny encoder).

The demo-data run (train from the bundle folder, evaluate and infer from the repository root) is one
test, so that pytest-xdist never runs it twice; the BUSI test needs ``../shared/data/busi`` and skips
without it.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "openus_cls"
CONFIGS = BUNDLE / "configs"
BUSI = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi"


def bundle_run(config_files: list[str], cwd: Path, run_id: str = "run", **overrides: str) -> str:
    """``python -m monai.bundle run RUN_ID --config_file [...] --key value ...`` in ``cwd``; returns its output."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", repr(config_files)]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}  # tiny tensors: one thread is faster, and pytest-xdist keeps every core busy
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed in {cwd}:\n{output[-6000:]}"
    return output


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def check_against_sklearn(eval_dir: Path, class_names: list[str]) -> dict:
    """metrics.json, the report and the confusion matrix equal scikit-learn's on predictions.csv."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    rows = read_csv(eval_dir / "predictions.csv")
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert set(metrics) == {"accuracy", "macro_f1", "auc", "balanced_accuracy", "n_images"}
    assert metrics["n_images"] == len(rows)
    y = [r["label"] for r in rows]
    p = [r["prediction"] for r in rows]
    probs = np.array([[float(r[f"prob_{c}"]) for c in class_names] for r in rows])
    assert [class_names[i] for i in probs.argmax(1)] == p
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert metrics["accuracy"] == pytest.approx(accuracy_score(y, p), abs=1e-9)
        assert metrics["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"), abs=1e-9)
        assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p), abs=1e-9)
        if set(y) == set(class_names):
            assert metrics["auc"] == pytest.approx(roc_auc_score(y, probs, labels=class_names, multi_class="ovr"), abs=1e-6)
        precision, recall, f1, support = precision_recall_fscore_support(y, p, labels=class_names, zero_division=0)
    report = {r["class"]: r for r in read_csv(eval_dir / "classification_report.csv")}
    for i, c in enumerate(class_names):
        assert float(report[c]["precision"]) == pytest.approx(precision[i], abs=1e-6)
        assert float(report[c]["recall"]) == pytest.approx(recall[i], abs=1e-6)
        assert float(report[c]["f1"]) == pytest.approx(f1[i], abs=1e-6)
        assert int(report[c]["support"]) == support[i]
    cm = [[int(v) for v in list(r.values())[1:]] for r in read_csv(eval_dir / "confusion_matrix.csv")]
    assert cm == confusion_matrix(y, p, labels=class_names).tolist()
    assert (eval_dir / "confusion_matrix.png").stat().st_size > 1000
    return metrics



@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    from openus_monai.data import synthesize_dataset

    out = tmp_path_factory.mktemp("demo_cls")
    synthesize_dataset(out, n=48, seed=0, size=128)
    return out


def test_train_evaluate_infer_on_demo_data(demo_dir, tmp_path):
    """Train (from the bundle folder), evaluate and infer (from the repository root) on the demo data."""
    from openus_monai.data import build_datalist

    models, common = tmp_path / "models", {"dataset_dir": demo_dir}
    out = bundle_run(["configs/train.json", "configs/tiny.json"], BUNDLE, "training",
                     ckpt_dir=models, output_dir=tmp_path / "train", **common)
    assert "Key metric: macro_f1 best value" in out
    checkpoint = torch.load(models / "model.pt", weights_only=True)  # class names are plain strings
    assert checkpoint["class_names"] == ["benign", "malignant", "normal"]
    assert any(k.startswith("encoder.layers.") for k in checkpoint["model"])
    assert list((tmp_path / "train").glob("events.out.tfevents.*")), "no TensorBoard log"

    rel = "bundles/openus_cls/configs/"
    bundle_run([rel + "train.json", rel + "evaluate.json", rel + "tiny.json"], REPO,
               ckpt_dir=models, output_dir=tmp_path / "eval", **common)
    metrics = check_against_sklearn(tmp_path / "eval", checkpoint["class_names"])
    test_images = [e["image"] for e in build_datalist(demo_dir, "classification")["test"]]
    assert metrics["n_images"] == len(test_images) == 9

    bundle_run([rel + "inference.json", rel + "tiny.json"], REPO,
               ckpt_dir=models, output_dir=tmp_path / "infer", **common)
    rows = read_csv(tmp_path / "infer" / "predictions.csv")
    names = checkpoint["class_names"]
    assert list(rows[0]) == ["image", "prediction", *(f"prob_{c}" for c in names)]
    assert [r["image"] for r in rows] == test_images
    probs = np.array([[float(r[f"prob_{c}"]) for c in names] for r in rows])
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5) and (probs >= 0).all()
    assert [names[i] for i in probs.argmax(1)] == [r["prediction"] for r in rows]
    evaluated = read_csv(tmp_path / "eval" / "predictions.csv")
    assert np.allclose(probs, [[float(r[f"prob_{c}"]) for c in names] for r in evaluated], atol=1e-6)

    # --cpu_bf16 true: bfloat16 autocast with the weights cast once; the same files, probabilities within bf16's tolerance
    bundle_run([rel + "inference.json", rel + "tiny.json"], REPO,
               ckpt_dir=models, output_dir=tmp_path / "infer_bf16", cpu_bf16=True, **common)
    rows = read_csv(tmp_path / "infer_bf16" / "predictions.csv")
    assert [r["image"] for r in rows] == test_images
    bf16 = np.array([[float(r[f"prob_{c}"]) for c in names] for r in rows])
    assert np.abs(bf16 - probs).max() < 0.05 and np.allclose(bf16.sum(1), 1.0, atol=1e-5)


def test_metadata_and_model_zoo_ids():
    from monai.bundle import ConfigParser

    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 1
    assert "openus-monai" in meta["required_packages_version"]

    def ids(*names: str) -> ConfigParser:
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / n) for n in names])
        return parser

    train = ids("train.json")
    for key in ("bundle_root", "dataset_dir", "ckpt_dir", "output_dir", "network_def", "network", "train#trainer",
                "train#dataset#data", "train#handlers", "train#preprocessing", "train#postprocessing", "validate#evaluator",
                "validate#handlers", "validate#preprocessing", "validate#postprocessing", "initialize", "run", "training",
                "seed", "label_ratio", "pretrained", "encoder", "freeze_encoder", "mode", "max_epochs", "batch_size", "num_workers",
                "device", "key_metric", "class_balance"):
        assert key in train, key
    assert train["train#trainer#max_epochs"] == "@max_epochs"
    assert isinstance(train["train#handlers"], list) and isinstance(train["validate#handlers"], list)  # --tracking mlflow appends
    evaluate = ids("train.json", "evaluate.json")
    assert evaluate["run"] == ["$@validate#evaluator.run()"]
    infer = ids("inference.json")
    for key in ("bundle_root", "dataset_dir", "network_def", "network", "preprocessing", "postprocessing", "inferer",
                "dataset", "evaluator", "handlers", "initialize", "run"):
        assert key in infer, key
    multi = ids("train.json", "multi_gpu_train.json")
    assert multi["network#_target_"].endswith("DistributedDataParallel") and "finalize" in multi
    assert multi["train#sampler#_target_"] == "DistributedSampler"


@pytest.mark.skipif(not (BUSI / "labels.csv").is_file(), reason=f"BUSI not available at {BUSI} (optional real data)")
def test_busi_evaluate_reads_every_image_and_matches_sklearn(tmp_path):
    """The bundle's evaluate workflow (in process) over all 780 BUSI images: every file is read through the
    bundle's loading transforms, and metrics.json equals scikit-learn on the written predictions."""
    from monai.bundle import ConfigWorkflow

    from openus_monai.data import ClassNames
    from openus_monai.data import build_datalist, read_labels_csv
    from openus_monai.networks import OpenUSClassifier

    listed = read_labels_csv(BUSI / "labels.csv", required=("image", "label"))
    lists = build_datalist(BUSI, "classification")
    assert len(listed) == 780 and len(lists["test"]) == 156 and lists["classes"] == ["benign", "malignant", "normal"]
    torch.manual_seed(0)
    net = OpenUSClassifier({"depths": [1, 1, 1, 1], "dims": 16}, num_classes=3)
    torch.nn.init.normal_(net.head.weight, std=1.0)  # spread the untrained predictions over the classes
    (tmp_path / "models").mkdir()
    torch.save({"model": net.state_dict(), "class_names": ClassNames(lists["classes"]).state_dict()}, tmp_path / "models" / "model.pt")
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json"), str(CONFIGS / "tiny.json")],
        meta_file=str(CONFIGS / "metadata.json"), logging_file=False, workflow_type=None,
        dataset_dir=str(BUSI), ckpt_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "eval"),
        # every split instead of only "test", so that this short run reads every image of the data set
        test_datalist="$openus_monai.data.encode_labels(@datalist['training'] + @datalist['validation'] + @datalist['test'], @class_names)",
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    metrics = check_against_sklearn(tmp_path / "eval", lists["classes"])
    assert metrics["n_images"] == 780
    rows = read_csv(tmp_path / "eval" / "predictions.csv")
    assert sorted(r["image"] for r in rows) == sorted(r["image"] for r in listed)
    assert {(r["image"], r["label"]) for r in rows} == {(r["image"], r["label"]) for r in listed}
