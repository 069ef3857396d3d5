"""load_openus_checkpoint: formats, reports, shape errors, channel adaptation, safe loading."""

from __future__ import annotations

import pytest
import torch

from openus_monai.networks import VMamba, load_openus_checkpoint

from _helpers import rel_err


def small(in_channels=3):
    return VMamba(depths=(1, 1, 1, 1), dims=8, in_channels=in_channels)


def perturbed_state(model):
    return {k: v + torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}


def assert_loaded(model, state):
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], msg=k)


def test_original_pretraining_checkpoint_prefers_teacher(tmp_path):
    src = small()
    teacher, student = perturbed_state(src), perturbed_state(src)
    ckpt = {
        "teacher": {f"backbone.{k}": v for k, v in teacher.items()} | {"head.last_layer.weight": torch.zeros(4, 4)},
        "student": {f"module.backbone.{k}": v for k, v in student.items()},
        "epoch": 150,
    }
    torch.save(ckpt, tmp_path / "checkpoint0150.pth")
    model = small()
    report = load_openus_checkpoint(model, tmp_path / "checkpoint0150.pth")
    assert_loaded(model, teacher)
    assert report.missing_keys == [] and report.unexpected_keys == ["head.last_layer.weight"]
    assert "teacher" in report.source
    load_openus_checkpoint(model, tmp_path / "checkpoint0150.pth", key="student")
    assert_loaded(model, student)


def test_imagenet_checkpoint_reports_missing_and_dropped():
    state = perturbed_state(small())
    imagenet = {k: v for k, v in state.items() if not k.startswith(("outnorm", "masked_embed"))}
    imagenet |= {"classifier.head.weight": torch.zeros(1000, 64), "classifier.norm.weight": torch.ones(64)}
    model = small()
    report = load_openus_checkpoint(model, {"model": imagenet})
    assert set(report.missing_keys) == {"masked_embed"} | {f"outnorm{i}.{p}" for i in range(4) for p in ("weight", "bias")}
    assert set(report.unexpected_keys) == {"classifier.head.weight", "classifier.norm.weight"}
    assert "missing" in str(report) and "dropped" in str(report)
    with pytest.raises(ValueError, match="missing encoder keys"):
        load_openus_checkpoint(small(), {"model": imagenet}, strict=True)


def test_own_export_round_trip(tmp_path):
    src = small()
    torch.save(src.state_dict(), tmp_path / "backbone.pt")
    model = small()
    report = load_openus_checkpoint(model, tmp_path / "backbone.pt", strict=True)
    assert_loaded(model, src.state_dict())
    assert report.unexpected_keys == []


def test_shape_mismatch_names_keys():
    state = VMamba(depths=(1, 1, 1, 1), dims=16).state_dict()
    with pytest.raises(ValueError, match=r"layers\.0\.blocks\.0\.norm\.weight: checkpoint \[16\] vs encoder \[8\]"):
        load_openus_checkpoint(small(), state)


def test_three_channel_stem_into_grayscale_encoder():
    torch.manual_seed(0)
    state = perturbed_state(small(3))
    model = small(1)
    report = load_openus_checkpoint(model, state)
    torch.testing.assert_close(model.patch_embed[0].weight, state["patch_embed.0.weight"].sum(1, keepdim=True))
    assert report.adapted and "patch_embed.0.weight" in report.adapted[0]
    x = torch.rand(1, 1, 64, 64)
    rgb = small(3)
    rgb.load_state_dict(state)
    model.eval(), rgb.eval()
    gray_out, rgb_out = model(x)[-1], rgb(x.expand(-1, 3, -1, -1))[-1]
    assert rel_err(gray_out, rgb_out) < 1e-4


class NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": small().state_dict(), "payload": NotATensor()}, path)
    with pytest.raises(ValueError, match="weights_only=True.*refused"):
        load_openus_checkpoint(small(), path)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_openus_checkpoint(small(), tmp_path / "nope.pt")
    (tmp_path / "trunc.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="trunc.pt"):
        load_openus_checkpoint(small(), tmp_path / "trunc.pt")
    with pytest.raises(ValueError, match="no key matches"):
        load_openus_checkpoint(small(), {"foo": torch.zeros(1)})
