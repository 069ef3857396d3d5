"""The label-efficiency study CLI on the classification bundle: 2 label ratios, 1 seed, tiny encoder, in process."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "openus_cls"



def test_label_efficiency_on_openus_cls(tmp_path):
    from openus_monai.__main__ import OpenUSCLI
    from openus_monai.data import build_datalist, synthesize_dataset

    demo = tmp_path / "demo"
    synthesize_dataset(demo, n=48, seed=0, size=128)
    result = OpenUSCLI().label_efficiency(
        bundle=str(BUNDLE),
        output_dir=str(tmp_path / "study"),
        ratios=(0.25, 1.0),
        seeds=0,
        config_file=str(BUNDLE / "configs" / "tiny.json"),
        overrides={"dataset_dir": str(demo), "max_epochs": 1},
        in_process=True,
    )
    with open(result["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["label_ratio"]) for r in rows] == [0.25, 1.0]
    for row in rows:
        for key in ("accuracy", "macro_f1", "balanced_accuracy"):
            assert 0.0 <= float(row[key]) <= 1.0
        metrics = json.loads((Path(row["run_dir"]) / "eval" / "metrics.json").read_text())
        assert metrics["n_images"] == len(build_datalist(demo, "classification")["test"])
        saved = torch.load(Path(row["run_dir"]) / "models" / "model.pt", weights_only=True)
        assert saved["class_names"] == ["benign", "malignant", "normal"]
    assert {"accuracy_mean", "macro_f1_mean", "balanced_accuracy_mean"} <= set(result["summary"][0])
    assert Path(result["plot"]).stat().st_size > 1000
    # 25 % of the labels: a nested, class-stratified subset of the 33 training images
    small = build_datalist(demo, "classification", label_ratio=0.25)["training"]
    assert len(small) == 9 and {e["label"] for e in small} == {"benign", "malignant", "normal"}
