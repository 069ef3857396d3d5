"""The generic pretraining engine: events in order, the method hooks, the schedule owner, a second method, resume."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from ignite.engine import Events
from monai.engines.utils import IterationEvents

from openus_monai.engines import OpenUSPretrainer, PretrainingEngine
from openus_monai.handlers import PerParameterGradClipHandler, PhaseTimerHandler, PretrainingSchedule
from openus_monai.handlers.schedules import cosine, linear, progress, warmup_cosine
from openus_monai.methods import MaskedReconstructionMethod, PretrainingMethod
from openus_monai.networks import VMamba


class Toy(PretrainingMethod):
    """Regress a target from ``x`` with one linear layer; records the hook calls. NaN loss on ``poison`` iterations."""

    required_keys = ("x", "y")

    def __init__(self) -> None:
        super().__init__()
        self.student = nn.Linear(3, 1)
        self.calls: list[tuple[str, float]] = []
        self.poison: set[float] = set()

    @property
    def export_encoder(self) -> nn.Module:
        return self.student

    def forward(self, batch, schedule, autocast):
        with autocast():
            loss = (self.run_student(batch["x"]) - batch["y"]).square().mean()
        if float(batch["y"][0]) in self.poison:
            loss = loss * math.nan
        return {"loss": loss, "loss_mse": loss, "weight_seen": self.student.weight.detach().clone()}

    def update(self, outputs, schedule):
        self.calls.append(("update", schedule["lr"]))
        assert not torch.equal(outputs["weight_seen"], self.student.weight)  # after the optimizer step

    def rewind(self):
        self.calls.append(("rewind", math.nan))


def toy_data(n: int = 4) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [{"x": torch.randn(8, 3, generator=g), "y": torch.full((8, 1), float(i))} for i in range(n)]


def toy_engine(method: Toy, data, max_epochs: int = 1, **kw) -> PretrainingEngine:
    optimizer = torch.optim.SGD(method.student.parameters(), lr=0.1)
    return PretrainingEngine("cpu", max_epochs, data, method, optimizer, PretrainingSchedule(lr=0.1, min_lr=0.05), **kw)


def test_iteration_events_fire_in_order_with_the_method_outputs():
    method = Toy()
    engine = toy_engine(method, toy_data(2))
    seen = []
    events = [Events.ITERATION_STARTED, *IterationEvents, Events.ITERATION_COMPLETED]
    order = [Events.ITERATION_STARTED, IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED,
             IterationEvents.BACKWARD_COMPLETED, IterationEvents.MODEL_COMPLETED, Events.ITERATION_COMPLETED]
    for event in events:
        engine.add_event_handler(event, lambda e, ev=event: seen.append((ev, type(e.state.output).__name__)))
    grads = []
    engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, lambda e: grads.append(method.student.weight.grad is not None))
    engine.run()
    assert [ev for ev, _ in seen] == order * 2
    # during the step the output is the method's dict (tensors); after it, MONAI's one-item list of floats
    assert [kind for ev, kind in seen if ev == IterationEvents.LOSS_COMPLETED] == ["dict", "dict"]
    assert [kind for ev, kind in seen if ev == Events.ITERATION_COMPLETED] == ["list", "list"]
    assert grads == [True, True]
    out = engine.state.output[0]
    assert set(out) == {"loss", "loss_mse", "lr", "weight_decay"} and all(isinstance(v, float) for v in out.values())
    assert [name for name, _ in method.calls] == ["update", "update"]


def test_skipped_step_rewinds_the_method_and_changes_nothing():
    method = Toy()
    method.poison = {1.0}  # the second batch
    engine = toy_engine(method, toy_data(3))
    weights = {}
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: weights.__setitem__(e.state.iteration, method.student.weight.detach().clone()))
    engine.run()
    assert [name for name, _ in method.calls] == ["update", "rewind", "update"]
    assert torch.equal(weights[1], weights[2]) and not torch.equal(weights[2], weights[3])
    assert engine.nonfinite.total == 1


def test_missing_batch_keys_are_named():
    engine = toy_engine(Toy(), [{"x": torch.zeros(2, 3)}])
    with pytest.raises(KeyError, match=r"needs batch keys \['y'\]"):
        engine.run()


def test_former_engine_name_warns():
    with pytest.warns(DeprecationWarning, match="PretrainingEngine"):
        engine = OpenUSPretrainer("cpu", 1, toy_data(1), Toy(), torch.optim.SGD(Toy().parameters(), lr=0.1), PretrainingSchedule(lr=0.1))
    assert isinstance(engine, PretrainingEngine)


# -- the schedule owner --------------------------------------------------------------------------------------

CONFIG = dict(
    lr=5e-4, min_lr=1e-6, warmup_epochs=3, weight_decay=0.04, final_weight_decay=0.4, teacher_momentum=0.996,
    teacher_temp=0.07, warmup_teacher_temp=0.04, teacher_patch_temp=0.07, warmup_teacher_patch_temp=0.04,
    teacher_temp_warmup_epochs=2, mask_alpha=(0.1, 0.9), mask_r=(0.1, 0.9),
)


def former_formulas(iteration: int, per_epoch: int, epochs: int) -> dict[str, float]:
    """The schedules as the former engine, TeacherEMAHandler and SelfAdaptiveMaskingHandler each computed them."""
    total = epochs * per_epoch
    temp_p = progress(iteration, max(int(2 * per_epoch), 1) + 1)
    return {
        "lr": warmup_cosine(5e-4, 1e-6, iteration, total, int(3 * per_epoch)),
        "weight_decay": warmup_cosine(0.04, 0.4, iteration, total, 0),
        "teacher_momentum": cosine(0.996, 1.0, progress(iteration, total)),
        "teacher_temp": linear(0.04, 0.07, temp_p),
        "teacher_patch_temp": linear(0.04, 0.07, temp_p),
        "mask_alpha": cosine(0.1, 0.9, progress(max(iteration, 1), total)),
        "mask_r_t": linear(0.1, 0.9, progress(max(iteration, 1), total)),
    }


@pytest.mark.parametrize("iteration", [1, 2, 7, 21, 30, 31, 64, 99, 100])
def test_schedule_owner_equals_the_former_formulas(iteration):
    values = PretrainingSchedule(**CONFIG)(iteration, 10, 10)
    assert values == pytest.approx(former_formulas(iteration, 10, 10), rel=0, abs=0)


def test_schedule_end_points():
    schedule = PretrainingSchedule(**CONFIG)
    first, peak, last = schedule(1, 10, 10), schedule(30, 10, 10), schedule(100, 10, 10)
    assert first["lr"] == 0.0 and peak["lr"] == pytest.approx(5e-4) and last["lr"] == pytest.approx(1e-6)
    assert first["teacher_momentum"] == pytest.approx(0.996) and last["teacher_momentum"] == pytest.approx(1.0)
    assert first["teacher_temp"] == pytest.approx(0.04) and schedule(21, 10, 10)["teacher_temp"] == pytest.approx(0.07)
    assert first["mask_alpha"] == pytest.approx(0.1) and last["mask_r_t"] == pytest.approx(0.9)
    assert set(PretrainingSchedule(lr=1.0)(1, 1, 1)) == {"lr", "weight_decay"}  # only what is configured


# -- a second method through the same engine -----------------------------------------------------------------


def images(n: int = 2, size: int = 64) -> list[dict[str, torch.Tensor]]:
    """Smooth 1-channel images (a learnable pattern), two per batch."""
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        phase = torch.rand(2, 1, 1, generator=g)
        out.append({"image": (0.5 + 0.5 * torch.sin(6 * (xx + yy)[None] + 6 * phase))[:, None], "index": torch.arange(2)})
    return out


def reconstruction_engine(max_epochs: int, seed: int = 3) -> tuple[MaskedReconstructionMethod, torch.optim.Optimizer, PretrainingEngine]:
    torch.manual_seed(0)
    method = MaskedReconstructionMethod(VMamba(depths=(1, 1, 1, 1), dims=8, in_channels=1), mask_ratio=0.5)
    optimizer = torch.optim.AdamW(method.student.parameters(), lr=1e-3)
    engine = PretrainingEngine(
        "cpu", max_epochs, images(), method, optimizer, PretrainingSchedule(lr=3e-3, min_lr=1e-4, warmup_epochs=1, weight_decay=0.01),
        deterministic_seed=seed, handlers=[PerParameterGradClipHandler(3.0)],
    )
    return method, optimizer, engine


def test_masked_reconstruction_method_trains_through_the_engine():
    method, _, engine = reconstruction_engine(max_epochs=10)
    timer = PhaseTimerHandler(keep_history=True)
    timer.attach(engine)
    losses = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output[0]["loss_rec"]))
    engine.run()
    assert len(losses) == 20 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-4:]) < 0.7 * sum(losses[:4]), losses
    assert engine.state.output[0]["images"]["reconstruction"].shape == (1, 1, 64, 64)
    assert len(timer.history) == 20 and set(timer.history[-1]) == {"forward", "backward", "step"}
    assert method.export_encoder is method.student.encoder


def test_resume_at_an_epoch_boundary_repeats_the_uninterrupted_run():
    method, _, engine = reconstruction_engine(max_epochs=3)
    engine.run()

    first, optimizer, interrupted = reconstruction_engine(max_epochs=3)
    saved = {}

    def stop(e):
        saved.update(network=first.state_dict(), optimizer=optimizer.state_dict(), trainer=e.state_dict())
        e.terminate()

    interrupted.add_event_handler(Events.EPOCH_COMPLETED(once=1), stop)
    interrupted.run()
    saved = {k: _copy(v) for k, v in saved.items()}
    second, optimizer2, resumed = reconstruction_engine(max_epochs=3)
    second.load_state_dict(saved["network"])
    optimizer2.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["trainer"])
    resumed.run()
    assert resumed.state.iteration == engine.state.iteration == 6
    for name, value in method.state_dict().items():
        assert torch.equal(second.state_dict()[name], value), name


def _copy(state):
    if isinstance(state, torch.Tensor):
        return state.clone()
    if isinstance(state, dict):
        return {k: _copy(v) for k, v in state.items()}
    return state
