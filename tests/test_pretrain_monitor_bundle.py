"""The pretraining bundle's representation monitor: k-NN accuracy on a labelled list and the collapse diagnostics
reach the engine metrics, TensorBoard and the log; a deliberately collapsing teacher (a huge temperature) logs the
collapse WARNING."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow

from _helpers import demo_dataset

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "openus_pretrain"
CONFIGS = [str(BUNDLE / "configs" / f) for f in ("train.json", "tiny.json")]
DIAGNOSTICS = ("monitor_entropy", "monitor_kl_uniform", "monitor_max_prototype_share", "monitor_feature_std")


def _run(tmp_path: Path, data: Path, **overrides):
    overrides = {"dataset_dir": str(data), "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval"),
                 "max_epochs": 2, "monitor_datalist": str(data), "monitor_interval": 1, "monitor_probe_size": 8, **overrides}
    workflow = ConfigWorkflow(config_file=CONFIGS, meta_file=str(BUNDLE / "configs" / "metadata.json"), logging_file=False,
                              workflow_type="train", **overrides)
    workflow.initialize()
    workflow.run()
    metrics = dict(workflow.parser.get_parsed_content("train#trainer").state.metrics)
    workflow.finalize()
    return metrics


def _tensorboard_tags(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in folder.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


def test_monitor_metrics_and_collapse_warning(tmp_path, caplog):
    data = demo_dataset(tmp_path / "demo", n=16, size=128)  # labels.csv with three classes: the monitor's list
    caplog.set_level(logging.INFO)
    metrics = _run(tmp_path / "collapsing", data, teacher_temp=100.0, warmup_teacher_temp=100.0)
    assert 0.0 <= metrics["monitor_knn_acc"] <= 1.0
    for name in DIAGNOSTICS:
        assert name in metrics, name
    assert metrics["monitor_entropy_ratio"] > 0.99  # a teacher at temperature 100 is uniform
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "teacher output: near uniform" in r.getMessage()]
    assert len(warnings) == 2, "one collapse warning per epoch"
    assert "monitor_patch_entropy_ratio" in metrics
    assert any("monitor_knn_acc" in r.getMessage() or "knn_acc" in r.getMessage() for r in caplog.records)
    tags = _tensorboard_tags(tmp_path / "collapsing" / "eval")
    assert {"monitor_knn_acc", "monitor_entropy", "monitor_max_prototype_share", "monitor_patch_entropy"} <= tags, sorted(tags)


def test_monitor_off_without_a_list_keeps_the_diagnostics(tmp_path, caplog):
    """No monitor_datalist: no k-NN, but the collapse diagnostics every epoch; tiny.json's teacher is not uniform."""
    data = demo_dataset(tmp_path / "demo", n=16, size=128)
    caplog.set_level(logging.WARNING)
    metrics = _run(tmp_path / "plain", data, monitor_datalist="")
    assert "monitor_knn_acc" not in metrics and "monitor_entropy" in metrics
    assert metrics["monitor_entropy_ratio"] < 0.99 and metrics["monitor_patch_entropy_ratio"] < 0.99
    assert not [r for r in caplog.records if "near uniform" in r.getMessage()]


def test_the_papers_patch_temperature_gives_flat_patch_targets_at_this_scale(tmp_path):
    """Why the presets set ``teacher_patch_temp`` to 0.01: a small encoder's centred patch logits differ by a few
    hundredths, so at the paper's 0.07 the patch targets are close to uniform (the masked-patch term then sits near
    ln K with little to learn; 0.98 ln K on the 30-epoch corpus run), and the monitor measures it."""
    data = demo_dataset(tmp_path / "demo", n=16, size=128)
    ratio = {t: _run(tmp_path / str(t), data, monitor_datalist="", teacher_patch_temp=t, warmup_teacher_patch_temp=t)["monitor_patch_entropy_ratio"]
             for t in (0.01, 0.07)}
    assert ratio[0.07] > 0.7 and ratio[0.01] < 0.3, ratio


def test_method_interface_and_monitor_list(tmp_path):
    """features() of any method is the export encoder's pooled last stage (eval mode, training flag kept);
    teacher_targets() of OpenUS are distributions and the same features from one teacher forward; monitor_datalist
    gives class indices, a stratified subset."""
    import torch

    from openus_monai.data import monitor_datalist
    from openus_monai.methods import MaskedReconstructionMethod, OpenUSMethod
    from openus_monai.networks import VMamba

    x = torch.rand(3, 1, 64, 64)
    for method in (MaskedReconstructionMethod(VMamba(depths=[1, 1, 1, 1], dims=16, in_channels=1, drop_path_rate=0.5)),
                   OpenUSMethod(VMamba(depths=[1, 1, 1, 1], dims=16, in_channels=1), out_dim=32, hidden_dim=16, bottleneck_dim=8)):
        method.train()
        before = method.export_encoder.training  # True for the reconstruction student, False for OpenUS's teacher
        feats = method.features(x)
        assert feats.shape == (3, 128) and method.export_encoder.training == before
        torch.testing.assert_close(feats, method.export_encoder.eval()(x)[-1].mean((2, 3)))  # eval: no drop path
    forwards = []
    hook = method.teacher.encoder.register_forward_hook(lambda *_: forwards.append(1))
    targets = method.teacher_targets(x, temperature=0.1, patch_temperature=0.5)
    hook.remove()
    assert len(forwards) == 1
    probs, patch = targets["class"], targets["patch"]  # patch: 2 x 2 last-stage tokens per 64-pixel image
    assert probs.shape == (3, 32) and torch.allclose(probs.sum(1), torch.ones(3))
    assert patch.shape == (12, 32) and torch.allclose(patch.sum(1), torch.ones(12))
    torch.testing.assert_close(targets["features"], method.features(x))
    sharper = method.teacher_targets(x, temperature=0.1)["patch"]  # the patch temperature defaults to the class one (0.1 < 0.5)
    assert (sharper * sharper.log()).sum(1).mean() > (patch * patch.log()).sum(1).mean()  # lower entropy

    data = demo_dataset(tmp_path / "demo", n=16, size=64)
    full = monitor_datalist(str(data))
    assert len(full) == 16 and {e["label"] for e in full} == {0, 1, 2}
    part = monitor_datalist(str(data), max_images=8)
    assert 8 <= len(part) < 16 and {e["label"] for e in part} == {0, 1, 2}
    assert monitor_datalist("") == []


def test_probe_teacher_targets_splits_the_patch_term_into_floor_and_kl():
    """benchmarks/probe_teacher_targets.py: CE = target entropy + KL with KL >= 0, targets flatter at higher T."""
    import torch

    from benchmarks.probe_teacher_targets import target_table
    from openus_monai.methods import OpenUSMethod
    from openus_monai.networks import VMamba

    torch.manual_seed(0)
    method = OpenUSMethod(VMamba(depths=[1, 1, 1, 1], dims=16, in_channels=1), out_dim=32, hidden_dim=16, bottleneck_dim=8).eval()
    rows = target_table(method, torch.rand(4, 1, 64, 64), [0.01, 0.1, 10.0])
    for r in rows:
        assert r["patch_kl"] >= -1e-5 and abs(r["patch_ce"] - r["patch_floor"] - r["patch_kl"]) < 1e-5
    ratios = [r["patch_entropy_ratio"] for r in rows]
    assert ratios == sorted(ratios) and ratios[-1] > 0.99
