"""Skip training steps whose loss (or gradient) is not finite; stop after too many in a row.

Shared by :class:`~openus_monai.engines.PretrainingEngine` and :class:`~openus_monai.engines.GuardedSupervisedTrainer`
(the fine-tuning bundles). A skipped step changes no weight, optimizer moment or buffer; it is logged, and
``max_consecutive`` skipped steps in a row raise :class:`NonFiniteLossError`. Under ``torch.distributed``
the decision is all-reduced, so every process skips the same steps (a process that stepped alone would
leave the replicas apart, or hang DDP waiting for a backward).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import torch
import torch.nn as nn
from ignite import distributed as idist
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys

__all__ = ["GuardedSupervisedTrainer", "NonFiniteGuard", "NonFiniteLossError", "all_finite", "finite_flags", "step_skipped"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised after too many consecutive training steps with a non-finite loss or gradient."""


def finite_flags(*groups: Iterable[torch.Tensor | None]) -> list[bool]:
    """For each group of tensors, whether all their elements are finite on every process (one all-reduce)."""
    bad = []
    for tensors in groups:
        flags = [(~torch.isfinite(t.detach())).any() for t in tensors if t is not None]
        bad.append(bool(torch.stack(flags).any()) if flags else False)  # one device sync per group
    bad = torch.tensor(bad, dtype=torch.float32)
    if idist.get_world_size() > 1:
        bad = idist.all_reduce(bad, op="MAX")
    return [not b for b in bad.bool().tolist()]


def all_finite(tensors: Iterable[torch.Tensor | None]) -> bool:
    """Whether every element of every tensor is finite, on every process (one all-reduce under DDP)."""
    return finite_flags(tensors)[0]


def step_skipped(engine: Engine) -> bool:
    """Whether the engine's current iteration was skipped for a non-finite loss or an fp16 overflow (read by
    handlers that run at ``ITERATION_COMPLETED`` and must leave a skipped step without trace)."""
    guard = getattr(engine, "nonfinite", None)
    return bool(guard is not None and guard.skipping)


class NonFiniteGuard:
    """The skip-and-count rule: :meth:`passed` after a good step, :meth:`skipped` after a bad one.

    Args:
        max_consecutive: consecutive skipped steps tolerated; the one that reaches it makes :meth:`skipped`
            return True (the caller then writes what it can and raises :meth:`error`).
    """

    def __init__(self, max_consecutive: int = 5) -> None:
        if int(max_consecutive) < 1:
            raise ValueError(f"max_nonfinite must be a positive number of steps, got {max_consecutive}")
        self.max_consecutive = int(max_consecutive)
        self.streak, self.first_bad, self.total = 0, 0, 0
        self.skipping = False  # whether the current step is skipped

    def passed(self, engine: Engine | None = None) -> None:
        """Record a good step."""
        self.streak, self.skipping = 0, False

    def overflowed(self) -> None:
        """Record a step skipped for an fp16 gradient overflow (the ``GradScaler``'s business: not counted)."""
        self.skipping = True

    def skipped(self, engine: Engine, detail: str) -> bool:
        """Record and log a skipped step; True when this one completes ``max_consecutive`` in a row."""
        iteration = engine.state.iteration
        self.streak += 1
        self.total += 1
        if self.streak == 1:
            self.first_bad = iteration
        self.skipping = True
        logger.warning(
            "iteration %d: non-finite %s; step skipped (%d in a row, %d allowed)", iteration, detail, self.streak, self.max_consecutive
        )
        return self.streak >= self.max_consecutive

    @property
    def last_good(self) -> int:
        """The iteration before the current streak of skipped steps."""
        return self.first_bad - 1

    def error(self, engine: Engine, detail: str, checkpoint: str | None) -> NonFiniteLossError:
        """The error that stops the run, naming the iterations and where the last good state was written."""
        where = (
            f"the last good state (after iteration {self.last_good}) was saved to {checkpoint}"
            if checkpoint
            else "the checkpoints written so far hold good states (skipped steps change nothing)"
        )
        return NonFiniteLossError(
            f"{self.streak} consecutive non-finite training steps, iterations {self.first_bad}-{engine.state.iteration} "
            f"(last: {detail}); stopping: {where}. Lower the learning rate or check the data before resuming."
        )


def _grad_norms(params: Iterable[nn.Parameter]) -> list[torch.Tensor]:
    grads = [p.grad for p in params if p.grad is not None]
    return list(torch._foreach_norm(grads)) if grads else []


class GuardedSupervisedTrainer(SupervisedTrainer):
    """MONAI's :class:`~monai.engines.SupervisedTrainer` that skips steps with a non-finite loss or gradient.

    After the backward pass (``IterationEvents.BACKWARD_COMPLETED``) the loss and the gradient norms are
    checked (all-reduced under DDP); when any is not finite, the gradients are dropped (``optimizer.step``
    then leaves parameters and moments alone; with AMP, MONAI's ``GradScaler`` skips the step itself) and the
    network's buffers (BatchNorm statistics) are put back to their values before the
    iteration. ``max_nonfinite`` skipped steps in a row raise :class:`NonFiniteLossError`; the last
    checkpoint written holds a good state, since skipped steps change nothing.

    Args:
        max_nonfinite: consecutive non-finite steps tolerated.
        args, kwargs: as :class:`~monai.engines.SupervisedTrainer`.
    """

    def __init__(self, *args, max_nonfinite: int = 5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.nonfinite = NonFiniteGuard(max_nonfinite)
        self._buffers: Mapping[str, torch.Tensor] = {}
        self.add_event_handler(Events.ITERATION_STARTED, self._snapshot_buffers)
        self.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self._check_step)

    def _snapshot_buffers(self, engine: Engine) -> None:
        self._buffers = {k: v.detach().clone() for k, v in engine.network.named_buffers()}

    def _check_step(self, engine: Engine) -> None:
        loss = engine.state.output[Keys.LOSS]
        scaled = engine.amp and engine.scaler is not None  # GradScaler: overflowing scaled gradients are its business
        if all_finite([loss] if scaled else [loss, *_grad_norms(engine.network.parameters())]):
            self.nonfinite.passed(engine)
            return
        if not scaled:  # (the scaler skips a step with inf/nan gradients itself)
            for group in engine.optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
        with torch.no_grad():
            for name, value in engine.network.named_buffers():
                if name in self._buffers:
                    value.copy_(self._buffers[name])
        detail = f"loss {float(loss.detach()):.4g}" if not torch.isfinite(loss.detach()).all() else "gradient"
        if self.nonfinite.skipped(engine, detail):
            raise self.nonfinite.error(engine, detail, None)
