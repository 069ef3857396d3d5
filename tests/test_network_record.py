"""A classifier trained with ``tiny.json`` evaluates and infers with ``train.json`` + ``evaluate.json`` /
``inference.json`` alone: the checkpoint records the network, and evaluation/inference build it from there."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from monai.bundle import ConfigWorkflow

from openus_monai.bundle.network_record import RECORD_KEY, NetworkRecord, read_network_record, recorded_network

from _helpers import REPO, demo_dataset

CLS = REPO / "bundles" / "openus_cls" / "configs"


def _run(files: list[str], **overrides) -> None:
    workflow = ConfigWorkflow(config_file=[str(CLS / f) for f in files], meta_file=str(CLS / "metadata.json"),
                              logging_file=False, workflow_type="train", **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()


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
    _run(["train.json", "tiny.json"], dataset_dir=str(data), ckpt_dir=str(models), output_dir=str(tmp_path / "train"),
         max_epochs=1)
    state = torch.load(models / "model.pt", weights_only=True)
    encoder = state[RECORD_KEY]["args"]["encoder"]  # the built encoder's whole config (dims per stage)
    assert encoder["depths"] == [1, 1, 1, 1] and encoder["dims"] == [16, 32, 64, 128]
    # the real-size configs: VMamba-S from the config, the tiny network from the checkpoint
    common = {"dataset_dir": str(data), "ckpt_dir": str(models), "num_workers": 0, "image_size": 64, "num_threads": 1}
    _run(["train.json", "evaluate.json"], output_dir=str(tmp_path / "eval"), **common)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n_images"] > 0
    _run(["inference.json"], output_dir=str(tmp_path / "infer"), **common)
    assert any((tmp_path / "infer").iterdir())


def test_tiny_segmenter_evaluates_and_infers_without_tiny_json(tmp_path):
    seg = REPO / "bundles" / "openus_seg" / "configs"

    def run(files, **overrides):
        workflow = ConfigWorkflow(config_file=[str(seg / f) for f in files], meta_file=str(seg / "metadata.json"),
                                  logging_file=False, workflow_type="train", **overrides)
        workflow.initialize()
        workflow.run()
        workflow.finalize()

    data = demo_dataset(tmp_path / "data", n=12, size=64)
    models = tmp_path / "models"
    run(["train.json", "tiny.json"], dataset_dir=str(data), ckpt_dir=str(models), output_dir=str(tmp_path / "train"),
        max_epochs=1)
    common = {"dataset_dir": str(data), "ckpt_dir": str(models), "num_workers": 0, "image_size": [64, 64], "num_threads": 1}
    run(["train.json", "evaluate.json"], output_dir=str(tmp_path / "eval"), **common)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n_images"] > 0
    run(["inference.json"], output_dir=str(tmp_path / "infer"), **common)
    assert len(list((tmp_path / "infer").glob("*.png"))) > 0
