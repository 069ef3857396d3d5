"""A classifier trained with ``tiny.json`` evaluates and infers with ``train.json`` + ``evaluate.json`` /
``inference.json`` alone: the checkpoint records the network, and evaluation/inference build it from there."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import torch

from openus_monai.bundle.network_record import RECORD_KEY, NetworkRecord, read_network_record, recorded_network
from openus_monai.data import build_datalist

from _helpers import REPO, demo_dataset, run_bundle

CLS = REPO / "bundles" / "openus_cls" / "configs"


def test_record_round_trip_and_rebuild(tmp_path, caplog):
    tiny = NetworkRecord("openus_monai.networks.OpenUSClassifier",
                         {"encoder": {"depths": (1, 1, 1, 1), "dims": 8}, "num_classes": 3, "pretrained": "x.pt"})
    assert tiny.state_dict() == {"_target_": "openus_monai.networks.OpenUSClassifier",
                                 "args": {"encoder": {"depths": [1, 1, 1, 1], "dims": 8}, "num_classes": 3}}
    net = tiny.build()
    torch.save({"model": net.state_dict(), RECORD_KEY: tiny.state_dict()}, tmp_path / "model.pt")
    assert read_network_record(tmp_path / "model.pt") == tiny
    assert read_network_record(tmp_path / "missing.pt") is None
    config = {"encoder": {"depths": [1, 1, 1, 1], "dims": 16}, "num_classes": 3}  # another size than recorded
    with caplog.at_level(logging.INFO):
        rebuilt = recorded_network(tmp_path / "model.pt", tiny.target, **config)
    rebuilt.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True)["model"])  # the recorded shapes
    assert "records" in caplog.text and "'dims': 8" in caplog.text
    from_config = recorded_network(tmp_path / "missing.pt", tiny.target, **config)  # no checkpoint: the configs'
    assert from_config.encoder.dims == (16, 32, 64, 128)
    torch.save(net.state_dict(), tmp_path / "plain.pt")  # a plain state dict records nothing
    assert recorded_network(tmp_path / "plain.pt", tiny.target, **config).encoder.dims == (16, 32, 64, 128)
    # a checkpoint names what is built from it: only network classes are called
    torch.save({"model": {}, RECORD_KEY: {"_target_": "os.system", "args": {"command": "touch owned"}}}, tmp_path / "evil.pt")
    with pytest.raises(TypeError, match="not a torch.nn.Module class"):
        recorded_network(tmp_path / "evil.pt", tiny.target, **config)
    with pytest.raises(TypeError, match="plain data"):
        NetworkRecord("x", {"encoder": torch.nn.Identity()})


def test_tiny_classifier_evaluates_and_infers_without_tiny_json(tmp_path):
    data = demo_dataset(tmp_path / "data", n=12, size=64)
    models = tmp_path / "models"
    run_bundle(CLS, ["train.json", "tiny.json"], dataset_dir=str(data), ckpt_dir=str(models),
               output_dir=str(tmp_path / "train"), max_epochs=1)
    state = torch.load(models / "model.pt", weights_only=True)
    encoder = state[RECORD_KEY]["args"]["encoder"]  # the built encoder's whole config (dims per stage)
    assert encoder["depths"] == [1, 1, 1, 1] and encoder["dims"] == [16, 32, 64, 128]
    # the real-size configs: VMamba-S from the config, the tiny network from the checkpoint
    common = {"dataset_dir": str(data), "ckpt_dir": str(models), "num_workers": 0, "image_size": 64, "num_threads": 1}
    run_bundle(CLS, ["train.json", "evaluate.json"], output_dir=str(tmp_path / "eval"), **common)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n_images"] > 0
    run_bundle(CLS, ["inference.json"], output_dir=str(tmp_path / "infer"), **common)
    assert any((tmp_path / "infer").iterdir())


def test_tiny_segmenter_evaluates_and_infers_without_tiny_json(tmp_path):
    seg = REPO / "bundles" / "openus_seg" / "configs"
    data = demo_dataset(tmp_path / "data", n=12, size=64)
    models = tmp_path / "models"
    run_bundle(seg, ["train.json", "tiny.json"], dataset_dir=str(data), ckpt_dir=str(models),
               output_dir=str(tmp_path / "train"), max_epochs=1)
    common = {"dataset_dir": str(data), "ckpt_dir": str(models), "num_workers": 0, "image_size": [64, 64], "num_threads": 1}
    run_bundle(seg, ["train.json", "evaluate.json"], output_dir=str(tmp_path / "eval"), **common)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n_images"] > 0
    # MONAI's own command line, as the bundle docs run it: no encoder option, no tiny.json
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
           "--meta_file", "configs/metadata.json", "--output_dir", str(tmp_path / "infer"),
           *[a for k, v in common.items() for a in (f"--{k}", json.dumps(v) if isinstance(v, list) else str(v))]]
    done = subprocess.run(cmd, cwd=seg.parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(list((tmp_path / "infer").glob("*.png"))) == len(build_datalist(data, "segmentation")["test"]) > 0
