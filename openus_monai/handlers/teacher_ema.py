"""Exponential moving average of the student into the teacher, as an Ignite handler."""

from __future__ import annotations

import torch
import torch.nn as nn
from ignite.engine import Engine, Events

from .schedules import cosine, progress

__all__ = ["TeacherEMAHandler"]


class TeacherEMAHandler:
    """After every iteration: ``teacher = m * teacher + (1 - m) * student`` over parameters with the same name.

    ``m`` follows a cosine from ``momentum`` to ``final_momentum`` over all iterations. The teacher stays
    in eval mode (no drop path) and never requires gradients. Parameters the teacher lacks (the student's
    patch prototypes, the reconstruction head) are skipped; so are buffers.

    Args:
        student: the trained module.
        teacher: its EMA copy (same parameter names where shared).
        momentum: momentum at the first iteration (0.996).
        final_momentum: momentum at the last iteration (1.0).
        total_iterations: iterations of the whole run (default: ``max_epochs * epoch_length`` at start).
    """

    def __init__(
        self, student: nn.Module, teacher: nn.Module, momentum: float = 0.996, final_momentum: float = 1.0, total_iterations: int | None = None
    ) -> None:
        self.student, self.teacher = student, teacher
        self.momentum, self.final_momentum, self.total_iterations = momentum, final_momentum, total_iterations
        student_params = dict(student.named_parameters())
        self.pairs = [(p, student_params[name]) for name, p in teacher.named_parameters() if name in student_params]
        if not self.pairs:
            raise ValueError("teacher and student share no parameter names")
        for p, _ in self.pairs:
            p.requires_grad_(False)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _started(self, engine: Engine) -> None:
        if self.total_iterations is None:
            self.total_iterations = engine.state.max_epochs * engine.state.epoch_length
        self.teacher.eval()

    def momentum_at(self, iteration: int) -> float:
        return cosine(self.momentum, self.final_momentum, progress(iteration, self.total_iterations or 1))

    @torch.no_grad()
    def __call__(self, engine: Engine) -> None:
        if getattr(engine.state, "nonfinite_skipped", False):  # a skipped step (non-finite loss) leaves no trace
            return
        m = self.momentum_at(engine.state.iteration)
        teacher = [t for t, _ in self.pairs]
        student = [s.detach().to(t.dtype) for t, s in self.pairs]
        torch._foreach_mul_(teacher, m)
        torch._foreach_add_(teacher, student, alpha=1 - m)
        engine.state.metrics["teacher_momentum"] = m
