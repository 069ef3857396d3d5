"""Exponential moving average of a student into its teacher (a method's teacher update)."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["TeacherEMA"]


class TeacherEMA:
    """``teacher = m * teacher + (1 - m) * student`` over the parameters with the same name.

    Parameters the teacher lacks (e.g. the student's patch prototypes, a reconstruction head) are skipped; so
    are buffers. The teacher's parameters stop requiring gradients. ``m`` is given at every update (the
    schedule owner's ``teacher_momentum``).

    Args:
        student: the trained module.
        teacher: its EMA copy (same parameter names where shared).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        student_params = dict(student.named_parameters())
        self.pairs = [(p, student_params[name]) for name, p in teacher.named_parameters() if name in student_params]
        if not self.pairs:
            raise ValueError("teacher and student share no parameter names")
        for p, _ in self.pairs:
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, momentum: float) -> None:
        """One EMA step with ``momentum`` (1: the teacher stays as it is; 0: it becomes the student)."""
        teacher = [t for t, _ in self.pairs]
        student = [s.detach().to(t.dtype) for t, s in self.pairs]
        torch._foreach_mul_(teacher, momentum)
        torch._foreach_add_(teacher, student, alpha=1 - momentum)
