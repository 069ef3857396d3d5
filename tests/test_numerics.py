"""Numerical robustness: non-finite steps skipped without trace, CPU autocast, extreme scan/attention inputs."""

from __future__ import annotations

import copy
import json
import logging
import math

import pytest
import torch
import torch.nn as nn
from ignite.engine import Events

import openus_monai.methods.openus as method_module
from openus_monai.io import latest_checkpoint
from openus_monai.engines import GuardedSupervisedTrainer, NonFiniteLossError, amp_dtype
from openus_monai.networks import selective_scan
from openus_monai.networks.ops.attention import ScanParams, attention_scores
from openus_monai.networks.ops.selective_scan import available_backends

from _helpers import REPO, demo_dataset
from fault_injection import flat_tensors
from test_bundle_pretrain import parsed

# -- helpers -------------------------------------------------------------------------------------------------


def _clone(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return copy.deepcopy(obj)


def _assert_same(a, b, where: str = "") -> None:
    """Exact equality of nested state dicts (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), (where, set(a) ^ set(b))
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def _state(parser) -> dict:
    """Everything a skipped step must leave alone: student, teacher, centres and the masking state (loss memory,
    generator; all in ``network``), optimizer moments and hyper-parameters."""
    return _clone(
        {
            "network": parser.get_parsed_content("network").state_dict(),
            "optimizer": parser.get_parsed_content("train#optimizer").state_dict(),
            "masking": parser.get_parsed_content("train#masking").state_dict(),  # also in network's _extra_state
        }
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(demo_dataset(tmp_path_factory.mktemp("numerics_data") / "demo", n=16))  # tiny.json's demo_images


def _trainer(tmp_path, data_dir, **overrides):
    parser = parsed({"ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval"), "dataset_dir": data_dir} | overrides)
    for _ in parser.get_parsed_content("initialize"):
        pass
    return parser, parser.get_parsed_content("train#trainer")


def _inject(trainer, nan_images: set[int], nan_loss: set[int], monkeypatch) -> None:
    """NaN global views on the iterations ``nan_images``; a NaN reconstruction term on ``nan_loss``."""

    def poison_batch(engine):
        if engine.state.iteration in nan_images:
            engine.state.batch["global_views"] = torch.full_like(engine.state.batch["global_views"], math.nan)

    trainer.add_event_handler(Events.ITERATION_STARTED, poison_batch)
    original = method_module.masked_reconstruction_loss

    def poisoned_loss(prediction, target, mask):
        loss, cells = original(prediction, target, mask)
        return (loss * math.nan if trainer.state.iteration in nan_loss else loss), cells

    monkeypatch.setattr(method_module, "masked_reconstruction_loss", poisoned_loss)


# -- non-finite steps ----------------------------------------------------------------------------------------


def test_isolated_nonfinite_steps_are_skipped_without_trace(tmp_path, data_dir, monkeypatch, caplog):
    parser, trainer = _trainer(tmp_path, data_dir, max_epochs=2)  # 8 iterations
    _inject(trainer, nan_images={3}, nan_loss={6}, monkeypatch=monkeypatch)
    snapshots, losses = {}, {}

    def record(engine):
        snapshots[engine.state.iteration] = _state(parser)
        losses[engine.state.iteration] = engine.state.output[0]["loss"]

    trainer.add_event_handler(Events.ITERATION_COMPLETED, record)  # after the teacher EMA (attached earlier)
    with caplog.at_level(logging.WARNING, logger="openus_monai.engines.nonfinite"):
        trainer.run()

    assert trainer.state.iteration == 8 and trainer.nonfinite.total == 2
    _assert_same(snapshots[3], snapshots[2], "iteration 3 (NaN images)")
    _assert_same(snapshots[6], snapshots[5], "iteration 6 (NaN loss term)")
    assert math.isnan(losses[3]) and math.isnan(losses[6])
    assert all(math.isfinite(losses[i]) for i in (1, 2, 4, 5, 7, 8)), losses
    # training went on: the steps after each skipped one changed the student, the teacher, the centres and the memory
    for before, after in ((3, 4), (6, 7)):
        net_a, net_b = snapshots[before]["network"], snapshots[after]["network"]
        for key in ("student.encoder.patch_embed.0.weight", "teacher.encoder.patch_embed.0.weight", "ibot_loss.center"):
            assert not torch.equal(net_a[key], net_b[key]), (key, after)
        assert not torch.equal(snapshots[before]["masking"]["memory.maps"], snapshots[after]["masking"]["memory.maps"])
    for name, value in flat_tensors(snapshots[8]["network"]).items():
        assert torch.isfinite(value).all(), name
    logged = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert any(m.startswith("iteration 3: non-finite loss") for m in logged), logged
    assert any(m.startswith("iteration 6: non-finite loss") and "rec_global=nan" in m for m in logged), logged


def test_consecutive_nonfinite_steps_stop_with_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
    parser, trainer = _trainer(tmp_path, data_dir, max_epochs=2, max_nonfinite=3)
    _inject(trainer, nan_images={3, 5}, nan_loss={4}, monkeypatch=monkeypatch)
    snapshots = {}
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: snapshots.__setitem__(e.state.iteration, _state(parser)))

    with pytest.raises(NonFiniteLossError) as info:
        trainer.run()

    path = tmp_path / "models" / "pretrain_last_good_iteration=2.pt"
    message = str(info.value)
    assert "3 consecutive non-finite" in message and "iterations 3-5" in message and str(path) in message, message
    assert trainer.state.iteration == 5 and path.is_file()
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert saved.keys() == {"network", "optimizer", "trainer"}  # the masking state is the method's, in network
    assert saved["trainer"]["iteration"] == 2
    _assert_same({k: saved[k] for k in ("network", "optimizer")} | {"masking": saved["network"]["_extra_state"]["masking"]}, snapshots[2], "checkpoint")
    assert latest_checkpoint(tmp_path / "models") == str(path)  # what `--resume true` picks up


def test_guarded_supervised_trainer_skips_and_stops():
    """The fine-tuning bundles' trainer: same rule on MONAI's SupervisedTrainer (BatchNorm statistics restored)."""
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-2)
    good = {"image": torch.randn(8, 4), "label": torch.randn(8, 1)}
    bad = {"image": torch.full((8, 4), math.nan), "label": torch.randn(8, 1)}
    data = [good, bad, good, bad, bad, good]
    trainer = GuardedSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=data, network=network, optimizer=optimizer, loss_function=nn.MSELoss(), max_nonfinite=3
    )
    states = {}
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: states.__setitem__(e.state.iteration, _clone({"n": network.state_dict(), "o": optimizer.state_dict()})))
    trainer.run()
    assert trainer.state.iteration == 6 and trainer.nonfinite.total == 3
    _assert_same(states[2], states[1], "skipped step 2")
    _assert_same(states[5], states[3], "skipped steps 4-5")
    assert not torch.equal(states[6]["n"]["0.weight"], states[5]["n"]["0.weight"])

    stopping = GuardedSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=[good, bad, bad], network=network, optimizer=optimizer, loss_function=nn.MSELoss(), max_nonfinite=2
    )
    with pytest.raises(NonFiniteLossError, match="iterations 2-3"):
        stopping.run()


@pytest.mark.parametrize("bundle", ["openus_seg", "openus_cls"])
def test_finetuning_bundles_use_the_guarded_trainer(bundle):
    config = json.loads((REPO / "bundles" / bundle / "configs" / "train.json").read_text())
    assert config["train"]["trainer"]["_target_"] == "openus_monai.engines.GuardedSupervisedTrainer"


# -- autocast ------------------------------------------------------------------------------------------------


def test_amp_option():
    assert amp_dtype(False, "cpu") is None and amp_dtype(True, "cpu") is None
    assert amp_dtype(True, "cuda") == torch.bfloat16
    assert amp_dtype("bf16", "cpu") == torch.bfloat16 and amp_dtype("fp16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="amp must be"):
        amp_dtype("int8", "cpu")


SMALL = {"global_size": 64, "local_size": 32, "n_local": 2, "batch_size": 2, "demo_images": 4, "max_epochs": 25}  # 50 iterations


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cpu_autocast_50_iterations_stay_finite(tmp_path, amp):
    parser, trainer = _trainer(tmp_path, str(demo_dataset(tmp_path / "demo", n=SMALL["demo_images"])), amp=amp, **SMALL)
    assert trainer.amp_dtype == amp_dtype(amp, "cpu") and (trainer.scaler is not None) == (amp == "fp16")
    seen = {"low_precision": False}

    def spy(module, inputs, outputs):  # the student's class logits come out of autocast's low-precision matmul
        seen["low_precision"] |= outputs[0].dtype == trainer.amp_dtype

    trainer.network.student.head.register_forward_hook(spy)
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output[0]))
    trainer.run()
    assert seen["low_precision"], "autocast did not run the encoder in low precision"
    assert trainer.state.iteration == 50 and trainer.nonfinite.total == 0
    assert all(math.isfinite(out[k]) for out in losses for k in out if k.startswith("loss")), losses
    for name, value in flat_tensors(trainer.network.state_dict()).items():
        assert torch.isfinite(value).all(), name
    # it learns in low precision: the pixel reconstruction falls (the iBOT terms of a sharp, non-collapsing
    # teacher stay near its entropy over 50 tiny steps, so the total is no measure of learning here)
    assert sum(out["loss_rec_global"] for out in losses[-10:]) < sum(out["loss_rec_global"] for out in losses[:10])


# -- extreme inputs ------------------------------------------------------------------------------------------


def _scan_inputs(length: int, delta: float, a_log: float, dtype=torch.float32, channels: int = 2, d_state: int = 2):
    torch.manual_seed(0)
    u = torch.randn(1, channels, length).to(dtype).requires_grad_()
    # delta after softplus = ``delta``: pass its inverse softplus
    raw = torch.full((1, channels, length), float(delta))
    raw = torch.where(raw > 20, raw, torch.log(torch.expm1(raw)))
    dt = (raw + 0.01 * torch.randn_like(raw)).to(dtype).requires_grad_()
    A_log = torch.full((channels, d_state), float(a_log), requires_grad=True)
    B = torch.randn(1, 1, d_state, length).to(dtype).requires_grad_()
    C = torch.randn(1, 1, d_state, length).to(dtype).requires_grad_()
    D = torch.ones(channels, requires_grad=True)
    return u, dt, A_log, B, C, D


EXTREMES = {
    "long": dict(length=3136 * 4, delta=0.01, a_log=0.0),
    "huge_step": dict(length=512, delta=1e3, a_log=0.0),
    "huge_A": dict(length=512, delta=0.1, a_log=10.0),
    "huge_step_and_A": dict(length=512, delta=1e3, a_log=10.0),
    "tiny_step_long": dict(length=3136 * 4, delta=1e-6, a_log=-5.0),
    "bf16": dict(length=3136, delta=0.5, a_log=2.0, dtype=torch.bfloat16),
}


@pytest.mark.parametrize("case", list(EXTREMES))
@pytest.mark.parametrize("backend", available_backends("cpu"))
def test_scan_finite_at_extremes(case, backend):
    u, dt, A_log, B, C, D = _scan_inputs(**EXTREMES[case])
    y = selective_scan(u, dt, -torch.exp(A_log), B, C, D, delta_softplus=True, backend=backend)
    assert y.dtype == u.dtype and torch.isfinite(y).all()
    (y.float().square().mean()).backward()
    for name, t in {"u": u, "delta": dt, "A_log": A_log, "B": B, "C": C, "D": D}.items():
        assert torch.isfinite(t.grad).all(), name
    if backend != "reference":  # and it is the same scan as the sequential oracle's
        with torch.no_grad():
            oracle = selective_scan(u, dt, -torch.exp(A_log), B, C, D, delta_softplus=True, backend="reference")
        tol = 2e-2 if u.dtype == torch.bfloat16 else 1e-4
        torch.testing.assert_close(y.detach().float(), oracle.float(), rtol=tol, atol=tol)
    if case == "huge_step_and_A":  # exp(delta A) underflows to 0: the state forgets everything, y = C B delta u + D u
        expected = (B[0, 0] * C[0, 0]).sum(0) * 1e3 * u[0] + u[0]
        torch.testing.assert_close(y[0], expected.detach(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("case", list(EXTREMES))
def test_attention_scores_finite_at_extremes(case):
    kwargs = EXTREMES[case]
    side = int(math.isqrt(kwargs["length"]))
    u, dt, A_log, B, C, _ = _scan_inputs(**(kwargs | {"length": side * side}))
    delta = torch.nn.functional.softplus(dt.float())
    A = -torch.exp(A_log)
    params = ScanParams(delta[:, None].expand(-1, 4, -1, -1), A[None].expand(4, -1, -1), B.expand(-1, 4, -1, -1), C.expand(-1, 4, -1, -1), side, side)
    scores = attention_scores(params)
    assert scores.shape == (1, side * side) and torch.isfinite(scores).all()
    scores.square().mean().backward()
    for name, t in {"delta": dt, "A_log": A_log, "B": B, "C": C}.items():
        assert torch.isfinite(t.grad).all(), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", available_backends("cpu"))
def test_autocast_leaves_scan_and_attention_in_float32(backend, dtype):
    """Autocast lowers matmuls; the recurrence (and the attention reach scan) must still accumulate in float32."""
    u, dt, A_log, B, C, D = _scan_inputs(length=1024, delta=0.5, a_log=1.0)
    A = -torch.exp(A_log)
    exact = selective_scan(u, dt, A, B, C, D, delta_softplus=True, backend=backend)
    side = 32
    params = ScanParams(
        torch.nn.functional.softplus(dt.float())[:, None].expand(-1, 4, -1, -1), A[None].expand(4, -1, -1), B.expand(-1, 4, -1, -1), C.expand(-1, 4, -1, -1), side, side
    )
    scores = attention_scores(params)
    with torch.autocast("cpu", dtype=dtype):
        y = selective_scan(u, dt, A, B, C, D, delta_softplus=True, backend=backend)
        scores_amp = attention_scores(params)
    assert y.dtype == torch.float32 and scores_amp.dtype == torch.float32
    torch.testing.assert_close(y, exact, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(scores_amp, scores, rtol=1e-6, atol=1e-6)
