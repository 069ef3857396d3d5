"""benchmarks/probe_frozen_features.py: the cross-validated linear probe and k-NN on frozen features, paired by seed."""

from __future__ import annotations

import torch

from benchmarks.probe_frozen_features import linear_probe, markdown, probe_rows
from openus_monai.io import atomic_torch_save, load_weights_only
from openus_monai.networks import VMamba
from openus_monai.networks.record import encoder_file


def test_linear_probe_separable_and_shuffled():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat(40)
    x = torch.randn(len(y), 16, generator=g) + 5 * torch.nn.functional.one_hot(y, 16).float()  # class = a direction
    assert linear_probe(x[:90], y[:90], x[90:], y[90:], seed=0) > 0.95
    shuffled = y[torch.randperm(len(y), generator=g)]
    assert linear_probe(x[:90], shuffled[:90], x[90:], shuffled[90:], seed=0) < 0.6  # chance is 1/3


def test_probe_rows_on_brightness_classes(tmp_path):
    """Two classes that differ in brightness: both encoders' features separate them at the full label set; one row
    per (ratio, seed) with nested subsets; the table pairs the differences."""
    torch.manual_seed(0)
    weights = atomic_torch_save(encoder_file(VMamba(depths=[1, 1, 1, 1], dims=[8, 16, 32, 64], in_channels=1),
                                             {"method": "openus", "image_size": 64}), tmp_path / "w.pt")
    g = torch.Generator().manual_seed(1)
    entries, images = {}, {}
    for split, n in (("training", 40), ("test", 20)):
        labels = [("dark", "bright")[i % 2] for i in range(n)]
        entries[split] = [{"image": f"{split}_{i}.png", "label": c} for i, c in enumerate(labels)]
        level = torch.tensor([0.2 if c == "dark" else 0.8 for c in labels]).view(-1, 1, 1, 1)
        images[split] = (level + 0.05 * torch.randn(n, 1, 64, 64, generator=g)).clamp(0, 1)
    rows = probe_rows(load_weights_only(weights), entries, images, ratios=[0.25, 1.0], seeds=[0, 1], k=5)
    assert [(r["label_ratio"], r["seed"], r["n_train"]) for r in rows] == [(0.25, 0, 10), (1.0, 0, 40), (0.25, 1, 10), (1.0, 1, 40)]
    for r in rows:
        if r["label_ratio"] == 1.0:
            assert r["pretrained_linear"] > 0.9 and r["random_linear"] > 0.9 and r["pretrained_knn"] > 0.9
    table = markdown(rows, majority=0.5)
    assert table.count("\n| ") == 2 and "| 0.25 | 10 |" in table and "scores 0.500" in table
