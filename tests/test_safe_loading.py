"""Checkpoints load with weights_only=True, and pickled code is refused by every loader of ours.

1. Every file the three bundles write (pretrain ``pretrain_*.pt``, ``backbone.pt``; seg/cls ``model.pt`` and the
   resumable ``seg_*.pt`` / ``cls_*.pt``) and the ``export-backbone`` CLI output loads with
   ``torch.load(..., weights_only=True)``.
2. A checkpoint carrying an object whose unpickling would run code (``__reduce__`` that creates a marker file)
   is refused, with a message naming the file, by ``load_openus_checkpoint``, the ``pretrained=`` path of
   ``OpenUSSegNet`` / ``OpenUSClassifier``, ``latest_checkpoint`` (the resume path), MONAI's
   ``CheckpointLoader`` and the ``export-backbone`` CLI; the marker proves the code never ran.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from monai.handlers import CheckpointLoader

from _helpers import REPO
from fault_injection import config_files, prepare_data
from openus_monai.io import latest_checkpoint
from openus_monai.networks import OpenUSClassifier, OpenUSSegNet, build_encoder, load_openus_checkpoint

TINY = {"depths": [1, 1, 1, 1], "dims": 16}
RUNS = {
    "openus_pretrain": {"max_epochs": 2, "save_interval": 4},
    "openus_seg": {"max_epochs": 1},
    "openus_cls": {"max_epochs": 1},
}


class CodeOnLoad:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for arbitrary code in a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_checkpoint(path: Path, marker: Path, **entries) -> Path:
    state = build_encoder(TINY, in_channels=1).state_dict()
    torch.save({"network": state, "trainer": {"iteration": 99}, **entries, "payload": CodeOnLoad(marker)}, path)
    return path


@pytest.fixture()
def evil(tmp_path):
    marker = tmp_path / "code_ran"
    return evil_checkpoint(tmp_path / "evil.pt", marker), marker


def test_payload_would_run_without_weights_only(evil):
    """Control: the payload is real (a plain pickle load runs it), so its absence below means something."""
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_our_loaders_refuse_pickled_code(evil):
    path, marker = evil
    with pytest.raises(ValueError, match=rf"{path.name}.*weights_only=True.*refused"):
        load_openus_checkpoint(build_encoder(TINY, in_channels=1), path)
    with pytest.raises(ValueError, match=rf"{path.name}.*refused"):
        OpenUSSegNet(encoder=TINY, num_classes=2, pretrained=str(path))
    with pytest.raises(ValueError, match=rf"{path.name}.*refused"):
        OpenUSClassifier(encoder=TINY, num_classes=3, pretrained=str(path))
    assert not marker.exists()


def test_resume_path_refuses_pickled_code(tmp_path, caplog):
    """latest_checkpoint skips (and sets aside) a checkpoint with pickled code and resumes from the older one;
    MONAI 1.6.1's CheckpointLoader itself loads with weights_only=True and refuses it too."""
    marker = tmp_path / "code_ran"
    good = tmp_path / "seg_checkpoint_epoch=1.pt"
    torch.save({"network": build_encoder(TINY, in_channels=1).state_dict(), "trainer": {"iteration": 3}}, good)
    bad = evil_checkpoint(tmp_path / "seg_checkpoint_epoch=2.pt", marker)
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(tmp_path, prefix="seg") == str(good)
    assert f"rejected checkpoint {bad}" in caplog.text and "refused" in caplog.text
    assert (tmp_path / (bad.name + ".rejected")).is_file()

    loader = CheckpointLoader(load_path=str(tmp_path / (bad.name + ".rejected")), load_dict={"network": build_encoder(TINY, in_channels=1)})
    with pytest.raises(Exception, match="Weights only load failed"):
        loader(Engine(lambda e, b: None))
    assert not marker.exists()


def test_export_backbone_cli_refuses_pickled_code(evil, tmp_path):
    path, marker = evil
    out = tmp_path / "enc.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "openus_monai", "export-backbone", str(path), str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode != 0
    assert str(path) in proc.stderr + proc.stdout and "refused" in proc.stderr + proc.stdout
    assert not marker.exists() and not out.exists()


@pytest.fixture(scope="module")
def bundle_outputs(tmp_path_factory):
    """Each bundle trained briefly in this process (tiny configs); returns {bundle: models folder}."""
    from monai.bundle import ConfigWorkflow

    root = tmp_path_factory.mktemp("safe_loading")
    torch.set_num_threads(1)
    folders = {}
    for bundle, overrides in RUNS.items():
        work = root / bundle
        data = prepare_data(bundle, root)
        args = {"ckpt_dir": str(work / "models"), "output_dir": str(work / "eval"), "dataset_dir": str(data), **overrides}
        workflow = ConfigWorkflow(config_file=config_files(bundle), workflow_type="train", run_id="training", **args)
        workflow.initialize()
        workflow.run()
        workflow.finalize()
        folders[bundle] = work / "models"
    return folders


@pytest.mark.parametrize(
    "bundle, expected",
    [
        ("openus_pretrain", {"pretrain_checkpoint_iteration=4.pt", "pretrain_checkpoint_iteration=8.pt", "pretrain_final.pt", "backbone.pt"}),
        ("openus_seg", {"seg_checkpoint_epoch=1.pt", "model.pt"}),
        ("openus_cls", {"cls_checkpoint_epoch=1.pt", "model.pt"}),
    ],
)
def test_every_written_checkpoint_loads_weights_only(bundle_outputs, bundle, expected):
    folder = bundle_outputs[bundle]
    written = {p.name for p in folder.iterdir() if p.is_file()}
    assert expected <= written, written
    for name in written:
        state = torch.load(folder / name, map_location="cpu", weights_only=True)
        assert isinstance(state, dict) and state, name
    if bundle != "openus_pretrain":  # the resumable checkpoint carries everything a resume needs
        resumable = torch.load(folder / f"{bundle.split('_')[1]}_checkpoint_epoch=1.pt", weights_only=True)
        assert {"network", "optimizer", "trainer", "best_model"} <= set(resumable)
        assert resumable["trainer"]["iteration"] == resumable["trainer"]["epoch_length"]  # one epoch done


def test_export_backbone_output_loads_weights_only(bundle_outputs, tmp_path):
    out = tmp_path / "enc.pt"
    source = bundle_outputs["openus_pretrain"] / "pretrain_final.pt"
    subprocess.run(
        [sys.executable, "-m", "openus_monai", "export-backbone", str(source), str(out)],
        cwd=REPO, check=True, capture_output=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    exported = torch.load(out, weights_only=True)
    assert set(exported) == {"state_dict", "network_config", "meta"}  # a self-describing encoder file, plain data
    assert exported["state_dict"] and all(isinstance(v, torch.Tensor) for v in exported["state_dict"].values())
    report = load_openus_checkpoint(build_encoder(TINY, in_channels=1), out, strict=True)
    assert report.unexpected_keys == []
