"""RepresentationMonitor on a dummy Ignite engine: metrics written, k-NN every N epochs, collapse warnings."""

from __future__ import annotations

import logging

import torch
from ignite.engine import Engine, Events

from openus_monai.handlers import RepresentationMonitor


def _loader(n_per_class: int = 20, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(2).repeat_interleave(n_per_class)
    images = torch.randn(len(labels), 1, 8, 8, generator=g) * 0.1 + labels.view(-1, 1, 1, 1).float()  # class = brightness
    return [{"image": images[i : i + 8], "label": labels[i : i + 8]} for i in range(0, len(labels), 8)]


def _run(monitor: RepresentationMonitor, epochs: int) -> list[dict]:
    seen = []
    engine = Engine(lambda e, b: None)
    monitor.attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(dict(e.state.metrics)))
    engine.run([0], max_epochs=epochs)
    return seen


def feature_fn(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x.mean((1, 2, 3)), torch.ones(len(x))], dim=1)  # [B, 2]: brightness separates the classes


def test_knn_every_interval_and_last_epoch():
    monitor = RepresentationMonitor(feature_fn, _loader(seed=1), train_loader=_loader(seed=0), interval=2, linear_probe=True)
    seen = _run(monitor, 3)
    assert "monitor_knn_acc" not in seen[0]
    assert seen[1]["monitor_knn_acc"] > 0.95 and seen[1]["monitor_linear_probe_acc"] > 0.95
    assert "monitor_knn_acc" in seen[2]  # the last epoch is always evaluated


def test_leave_one_out_without_train_loader():
    seen = _run(RepresentationMonitor(feature_fn, _loader(), interval=1), 1)
    assert seen[0]["monitor_knn_acc"] > 0.95


def test_collapse_warnings(caplog):
    probe = torch.randn(16, 1, 8, 8)
    uniform = RepresentationMonitor(feature_fn, teacher_targets_fn=lambda x: {"class": torch.full((len(x), 32), 1 / 32)}, probe_images=probe)
    with caplog.at_level(logging.WARNING):
        seen = _run(uniform, 1)
    assert seen[0]["monitor_entropy_ratio"] > 0.99 and "near uniform" in caplog.text
    caplog.clear()

    def one_prototype(x):
        p = torch.zeros(len(x), 32)
        p[:, 3] = 1
        return {"class": p}

    with caplog.at_level(logging.WARNING):
        seen = _run(RepresentationMonitor(feature_fn, teacher_targets_fn=one_prototype, probe_images=probe), 1)
    assert seen[0]["monitor_max_prototype_share"] == 1.0 and "one prototype takes 100%" in caplog.text
    caplog.clear()

    def healthy(x):
        return {"class": torch.eye(32)[torch.arange(len(x)) % 32] * 0.9 + 0.1 / 32}

    with caplog.at_level(logging.WARNING):
        seen = _run(RepresentationMonitor(feature_fn, teacher_targets_fn=healthy, probe_images=probe), 1)
    assert seen[0]["monitor_prototypes_used"] == 16 and "feature_std" in "".join(seen[0])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_patch_target_diagnostics(caplog):
    """Near-uniform patch targets (what left the masked-patch term at ln K) are measured and warned about on their
    own; the targets come from one call, whose features replace ``feature_fn``'s."""
    probe = torch.randn(4, 1, 8, 8)
    calls = []

    def targets(x):  # sharp class targets, 16 nearly uniform patch targets per image
        calls.append(len(x))
        patch = torch.softmax(torch.randn(len(x) * 16, 32, generator=torch.Generator().manual_seed(0)) * 0.01, dim=-1)
        return {"class": torch.eye(32)[torch.arange(len(x)) % 32] * 0.9 + 0.1 / 32, "patch": patch, "features": torch.zeros(len(x), 2)}

    def unused_feature_fn(x):
        raise AssertionError("the targets' features should be used")

    monitor = RepresentationMonitor(unused_feature_fn, teacher_targets_fn=targets, probe_images=probe)
    with caplog.at_level(logging.WARNING):
        seen = _run(monitor, 2)
    assert calls == [4, 4]  # one call per epoch
    assert seen[0]["monitor_patch_entropy_ratio"] > 0.99 and seen[0]["monitor_entropy_ratio"] < 0.5
    assert seen[0]["monitor_feature_std"] == 0.0 and "monitor_patch_feature_std" not in seen[0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and all("teacher patch targets: near uniform" in w for w in warnings)  # one per epoch
