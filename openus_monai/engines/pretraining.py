"""The generic pretraining engine: runs any :class:`~openus_monai.methods.PretrainingMethod`."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from functools import partial
from typing import Any

import torch
from ignite import distributed as idist
from ignite.engine import Engine
from monai.engines import Trainer
from monai.engines.utils import IterationEvents, default_prepare_batch
from monai.engines.workflow import Workflow
from torch.optim import Optimizer

from ..handlers.schedules import PretrainingSchedule
from ..io import atomic_torch_save
from ..methods.base import PretrainingMethod
from .nonfinite import NonFiniteGuard, finite_flags

__all__ = ["AMP_DTYPES", "PretrainingEngine", "amp_dtype"]

logger = logging.getLogger(__name__)

AMP_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def amp_dtype(amp: bool | str | None, device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype for the ``amp`` option: None (off), bfloat16 or float16.

    ``True`` means bfloat16 on CUDA and off elsewhere (on CPUs without native bfloat16 it is slower than
    float32); ``"bf16"`` / ``"fp16"`` force that dtype on any device (CPU autocast supports both).
    """
    if amp is None or amp is False or str(amp).lower() in ("", "false", "none", "off", "fp32", "float32"):
        return None
    if amp is True or str(amp).lower() == "true":
        return torch.bfloat16 if torch.device(device).type == "cuda" else None
    if str(amp).lower() not in AMP_DTYPES:
        raise ValueError(f"amp must be true/false or one of {sorted(AMP_DTYPES)}, got {amp!r}")
    return AMP_DTYPES[str(amp).lower()]


class PretrainingEngine(Trainer):
    """MONAI/Ignite trainer whose iteration is one step of a pretraining method; it knows nothing of the method.

    One iteration: the schedule owner's values at the global iteration -> ``network(batch, schedule, autocast)``
    (the method's losses; ``FORWARD_COMPLETED``, ``LOSS_COMPLETED``) -> backward and the non-finite check
    (``BACKWARD_COMPLETED``: gradient handlers such as clipping or prototype freezing run here) -> lr and weight
    decay into the optimizer, optimizer step, ``network.update`` (teacher EMA, centres, memories)
    (``MODEL_COMPLETED``). During these events ``engine.state.output`` is the method's output dict; the iteration
    then returns a one-item list of floats (``loss``, each ``loss_<term>``, every schedule value; ``skipped``
    on a skipped step) and the method's ``images``, MONAI's decollated convention, so stock handlers such as
    ``from_engine(["loss"], first=True)`` read it; after a good step the same floats but ``loss`` also go to
    ``engine.state.metrics``. Nothing else is written to ``engine.state``.

    A step whose loss or gradient is not finite (on any process) is skipped without trace: its gradients are
    dropped before ``BACKWARD_COMPLETED``, there is no optimizer step and no ``network.update``, and
    ``network.rewind()`` undoes what the forward advanced. The one that makes ``max_nonfinite`` in a row raises
    :class:`~openus_monai.engines.NonFiniteLossError`, after rank 0 wrote the last good state (``network``,
    ``optimizer``, ``trainer`` at the last good iteration: the keys of the bundle's checkpoints) to
    ``nonfinite_checkpoint_dir``. An fp16 gradient overflow is the ``GradScaler``'s business: skipped the same
    way, but not counted.

    Args:
        device: where to train.
        max_epochs: epochs.
        train_data_loader: the loader; its batches hold the method's ``required_keys``.
        network: the :class:`~openus_monai.methods.PretrainingMethod`.
        optimizer: over the method's ``student`` parameters; groups may carry ``lr_scale`` / ``wd_scale``.
        schedule: the :class:`~openus_monai.handlers.PretrainingSchedule` (every schedule of the run).
        student_wrapper: what runs the student's forward, e.g. ``DistributedDataParallel(network.student)``
            (default: the student itself); checkpoints keep the unwrapped names.
        max_nonfinite: consecutive non-finite steps tolerated before stopping.
        nonfinite_checkpoint_dir: where the last good state goes (``pretrain_last_good_iteration=N.pt``); None: none.
        deterministic_seed: if set, reseed torch at every iteration from it and the iteration, so a resumed run
            repeats the uninterrupted one (the epoch's data order and augmentations are reseeded by
            ``openus_monai.bundle.EpochSeedHandler`` in the bundle's handlers).
        amp: autocast: ``True`` (bfloat16 on CUDA, off on CPU), ``"bf16"`` or ``"fp16"`` (on any device; fp16
            with a ``GradScaler``), False. What runs in low precision is the method's choice (``autocast``).
        epoch_length, non_blocking, iteration_update, handlers: as :class:`monai.engines.Trainer`.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader,
        network: PretrainingMethod,
        optimizer: Optimizer,
        schedule: PretrainingSchedule,
        student_wrapper: torch.nn.Module | None = None,
        max_nonfinite: int = 5,
        nonfinite_checkpoint_dir: str | os.PathLike | None = None,
        deterministic_seed: int | None = None,
        amp: bool | str = False,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        handlers: Sequence | None = None,
    ) -> None:
        if not isinstance(network, PretrainingMethod):
            raise TypeError(f"network must be a PretrainingMethod, got {type(network).__name__}")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=default_prepare_batch,  # unused: the method's device_keys are moved in _iteration
            iteration_update=iteration_update,
            handlers=handlers,
            amp=False,  # MONAI's scaler is CUDA fp16 only; ours follows ``amp`` below
            decollate=False,
        )
        self.network, self.optimizer, self.schedule = network, optimizer, schedule
        network.wrap_student(student_wrapper)
        self.nonfinite, self.nonfinite_checkpoint_dir = NonFiniteGuard(max_nonfinite), nonfinite_checkpoint_dir
        self.deterministic_seed = deterministic_seed
        self.amp_dtype = amp_dtype(amp, device)
        self.scaler = torch.amp.GradScaler(torch.device(device).type) if self.amp_dtype == torch.float16 else None
        self._autocast = (
            partial(torch.autocast, device_type=torch.device(device).type, dtype=self.amp_dtype) if self.amp_dtype is not None else nullcontext
        )

    def run(self) -> None:
        Workflow.run(self)  # not Trainer.run, which would replace our GradScaler by its own (None with amp=False)

    def _to_device(self, batchdata: Mapping[str, Any]) -> dict[str, Any]:
        self.network.check_batch(batchdata)
        keys = self.network.device_keys if self.network.device_keys is not None else self.network.required_keys
        return dict(batchdata) | {k: batchdata[k].to(self.state.device, non_blocking=self.non_blocking) for k in keys}

    def _apply_optimizer_schedule(self, values: Mapping[str, float]) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = values["lr"] * group.get("lr_scale", 1.0)
            group["weight_decay"] = values["weight_decay"] * group.get("wd_scale", 1.0 if group.get("weight_decay", 0) else 0.0)

    def _iteration(self, engine: Engine, batchdata: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        if self.deterministic_seed is not None:
            torch.manual_seed(self.deterministic_seed * 1_000_003 + engine.state.iteration)
        values = self.schedule(engine.state.iteration, engine.state.epoch_length, engine.state.max_epochs)
        batch = self._to_device(batchdata)
        self.network.train()
        engine.state.output = outputs = self.network(batch, values, self._autocast)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)  # the method computes its losses in the same call

        self.optimizer.zero_grad(set_to_none=True)
        # backward even for a non-finite loss: under DDP every process must run it (the gradients are dropped)
        loss = outputs["loss"]
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        stepped = self._check_finite(engine, outputs)
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if stepped:
            self._apply_optimizer_schedule(values)  # here: a skipped step leaves the optimizer as it was
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.network.update(outputs, values)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)

        summary = {k: float(v.detach()) for k, v in outputs.items() if k == "loss" or k.startswith("loss_")} | values
        if stepped:  # the same values, as the last iteration's metrics (MONAI's MLFlowHandler logs those per epoch)
            engine.state.metrics.update({k: v for k, v in summary.items() if k != "loss"})
        else:
            summary["skipped"] = 1.0
        if "images" in outputs:
            summary["images"] = outputs["images"]
        return [summary]

    def _check_finite(self, engine: Engine, outputs: Mapping[str, Any]) -> bool:
        """Whether to step. Otherwise drop the gradients, rewind the method, log; stop when too many in a row."""
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms = list(torch._foreach_norm(grads)) if grads else []
        loss_ok, grads_ok = finite_flags([outputs["loss"]], norms)  # the same answer on every process
        if loss_ok and grads_ok:
            self.nonfinite.passed()
            return True
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.update()  # after unscale_: lowers the scale when the gradients overflowed
        self.network.rewind()
        terms = ", ".join(f"{k.removeprefix('loss_')}={float(v.detach()):.4g}" for k, v in outputs.items() if k.startswith("loss_"))
        what = "loss" if not loss_ok else "gradient"
        detail = f"{what} ({terms})"
        if self.scaler is not None and what == "gradient":  # fp16 overflow: the scaler's business, not a fault
            self.nonfinite.overflowed()
            logger.info("iteration %d: fp16 gradient overflow, step skipped, loss scale now %g", engine.state.iteration, self.scaler.get_scale())
        elif self.nonfinite.skipped(engine, detail):
            raise self.nonfinite.error(engine, detail, self._save_last_good())
        return False

    def _save_last_good(self) -> str | None:
        """Rank 0 writes the last good state (nothing was changed since); every process waits for it."""
        if self.nonfinite_checkpoint_dir is None:
            return None
        trainer = self.state_dict()
        trainer["iteration"] = self.nonfinite.last_good
        path = os.path.join(os.fspath(self.nonfinite_checkpoint_dir), f"pretrain_last_good_iteration={self.nonfinite.last_good}.pt")
        if idist.get_rank() == 0:
            atomic_torch_save({"network": self.network.state_dict(), "optimizer": self.optimizer.state_dict(), "trainer": trainer}, path)
        idist.barrier()
        return path
