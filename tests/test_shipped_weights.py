"""The encoder shipped in ``weights/``: it loads with ``weights_only=True``, is the file ``weights/README.md``
describes (sha256, size limit), rebuilds from the file alone, and trains both downstream bundles with
``--pretrained`` as the only encoder option."""

from __future__ import annotations

import hashlib
import re

import pytest
import torch

from _helpers import REPO, demo_dataset, scratch_outputs
from openus_monai.networks import VMamba
from openus_monai.networks.record import is_encoder_file, load_encoder_file

WEIGHTS = REPO / "weights" / "openus_us_small.pt"
README = REPO / "weights" / "README.md"


def _readme_sha256() -> str:
    found = re.findall(r"sha256[^0-9a-f]*\b([0-9a-f]{64})\b", README.read_text(encoding="utf-8"))
    assert len(set(found)) == 1, f"{README} must name exactly one sha256, found {sorted(set(found))}"
    return found[0]


def test_file_is_the_one_the_readme_describes():
    assert WEIGHTS.stat().st_size <= 25 * 2**20, "the shipped encoder must stay within 25 MB"
    assert hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() == _readme_sha256()


def test_loads_weights_only_and_rebuilds_from_the_file_alone():
    content = torch.load(WEIGHTS, weights_only=True)
    assert is_encoder_file(content)
    encoder, meta = load_encoder_file(content)
    assert isinstance(encoder, VMamba) and encoder.in_channels == 1
    assert meta["method"] == "openus" and meta["image_size"] == 128
    size = meta["image_size"]
    images = torch.rand(2, 1, size, size)
    with torch.no_grad():
        stages = encoder.eval()(images)
    assert stages[-1].shape[:2] == (2, encoder.dims[-1]) and all(torch.isfinite(s).all() for s in stages)
    assert {"corpus", "epochs", "commit"} <= set(meta), "the file carries its provenance (export-backbone --meta)"


@pytest.mark.parametrize(
    "bundle, settings",
    [
        ("openus_seg", {"image_size": [64, 64], "max_epochs": 1, "batch_size": 4, "num_workers": 0, "num_threads": 1, "max_train_images": 8}),
        ("openus_cls", {"image_size": 64, "max_epochs": 1, "warmup_epochs": 0, "batch_size": 8, "num_workers": 0, "num_threads": 1, "amp": False}),
    ],
)
def test_trains_downstream_bundles_with_pretrained_alone(tmp_path, bundle, settings):
    """``train.json`` + ``--pretrained weights/openus_us_small.pt`` (no encoder option) trains one epoch and the
    trained network carries the shipped encoder's architecture."""
    from monai.bundle import ConfigWorkflow

    configs = REPO / "bundles" / bundle / "configs"
    overrides = scratch_outputs({"dataset_dir": str(demo_dataset(tmp_path / "demo", n=12, size=64)), "pretrained": str(WEIGHTS), **settings})
    workflow = ConfigWorkflow(config_file=str(configs / "train.json"), meta_file=str(configs / "metadata.json"),
                              logging_file=False, workflow_type="train", **overrides)
    workflow.initialize()
    workflow.run()
    network = workflow.parser.get_parsed_content("network")
    workflow.finalize()
    args = torch.load(WEIGHTS, weights_only=True)["network_config"]["args"]
    assert list(network.encoder.depths) == list(args["depths"])
    assert torch.load(f"{overrides['ckpt_dir']}/model.pt", weights_only=True)["network_config"]["args"]["encoder"]["depths"] == list(args["depths"])
