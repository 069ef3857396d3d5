"""Schedules as pure functions of the global iteration, so a resumed run is the same run."""

from __future__ import annotations

import math

__all__ = ["PretrainingSchedule", "cosine", "linear", "progress", "warmup_cosine"]


def progress(iteration: int, total: int) -> float:
    """Fraction of training done at 1-based ``iteration`` of ``total``: 0 at the first, 1 at the last."""
    if total <= 1:
        return 1.0
    return min(max((iteration - 1) / (total - 1), 0.0), 1.0)


def cosine(start: float, end: float, p: float) -> float:
    """Half-cosine from ``start`` (p = 0) to ``end`` (p = 1)."""
    return end + (start - end) * (1 + math.cos(math.pi * p)) / 2


def linear(start: float, end: float, p: float) -> float:
    """Straight line from ``start`` (p = 0) to ``end`` (p = 1)."""
    return start + (end - start) * p


def warmup_cosine(base: float, final: float, iteration: int, total: int, warmup: int, warmup_start: float = 0.0) -> float:
    """Linear warm-up from ``warmup_start`` (first iteration) to ``base`` (iteration ``warmup``), then a
    cosine from ``base`` to ``final`` (last iteration ``total``), as DINO's schedules."""
    if iteration <= warmup:
        return linear(warmup_start, base, progress(iteration, warmup))
    return cosine(base, final, progress(iteration - warmup, total - warmup))


class PretrainingSchedule:
    """The one owner of every schedule of a pretraining run, each a pure function of the global iteration (so a
    resumed run is the same run), all from one number of iterations, ``max_epochs * epoch_length``.

    ``schedule(iteration, epoch_length, max_epochs)`` gives, at 1-based ``iteration``:

    - ``lr``: linear warm-up from 0 over ``warmup_epochs``, then a cosine to ``min_lr`` (:func:`warmup_cosine`);
    - ``weight_decay``: a cosine from ``weight_decay`` to ``final_weight_decay``;
    - ``teacher_momentum`` (if ``teacher_momentum`` is set): a cosine to ``final_teacher_momentum``;
    - ``teacher_temp``, ``teacher_patch_temp`` (if ``teacher_temp`` is set): linear from their warm-up values
      over ``teacher_temp_warmup_epochs``, then constant;
    - ``mask_alpha`` (cosine) and ``mask_r_t`` (linear) over the whole run (if ``mask_alpha`` / ``mask_r`` are
      ``(start, end)`` pairs).

    The engine applies ``lr`` and ``weight_decay`` to the optimizer and hands all values to the method.

    Args:
        lr, min_lr, warmup_epochs: peak and final learning rate, warm-up length (epochs, may be fractional).
        weight_decay, final_weight_decay: cosine weight-decay schedule (None: constant ``weight_decay``).
        teacher_momentum, final_teacher_momentum: EMA momentum at the first and last iteration.
        teacher_temp, warmup_teacher_temp, teacher_patch_temp, warmup_teacher_patch_temp, teacher_temp_warmup_epochs:
            teacher temperatures (warm-up values default to the final ones).
        mask_alpha, mask_r: ``(start, end)`` of the masking's alpha and r_t.
    """

    def __init__(
        self,
        lr: float,
        min_lr: float = 0.0,
        warmup_epochs: float = 0.0,
        weight_decay: float = 0.0,
        final_weight_decay: float | None = None,
        teacher_momentum: float | None = None,
        final_teacher_momentum: float = 1.0,
        teacher_temp: float | None = None,
        warmup_teacher_temp: float | None = None,
        teacher_patch_temp: float | None = None,
        warmup_teacher_patch_temp: float | None = None,
        teacher_temp_warmup_epochs: float = 0.0,
        mask_alpha: tuple[float, float] | None = None,
        mask_r: tuple[float, float] | None = None,
    ) -> None:
        self.lr, self.min_lr, self.warmup_epochs = lr, min_lr, warmup_epochs
        self.weight_decay = weight_decay
        self.final_weight_decay = weight_decay if final_weight_decay is None else final_weight_decay
        self.teacher_momentum, self.final_teacher_momentum = teacher_momentum, final_teacher_momentum
        self.teacher_temp, self.teacher_temp_warmup_epochs = teacher_temp, teacher_temp_warmup_epochs
        self.warmup_teacher_temp = teacher_temp if warmup_teacher_temp is None else warmup_teacher_temp
        self.teacher_patch_temp = teacher_temp if teacher_patch_temp is None else teacher_patch_temp
        self.warmup_teacher_patch_temp = self.teacher_patch_temp if warmup_teacher_patch_temp is None else warmup_teacher_patch_temp
        self.mask_alpha = None if mask_alpha is None else tuple(mask_alpha)
        self.mask_r = None if mask_r is None else tuple(mask_r)

    def __call__(self, iteration: int, epoch_length: int, max_epochs: int) -> dict[str, float]:
        """Every schedule's value at 1-based ``iteration`` of a run of ``max_epochs * epoch_length`` iterations."""
        total = max_epochs * epoch_length
        run = progress(iteration, total)
        values = {
            "lr": warmup_cosine(self.lr, self.min_lr, iteration, total, int(self.warmup_epochs * epoch_length)),
            "weight_decay": warmup_cosine(self.weight_decay, self.final_weight_decay, iteration, total, 0),
        }
        if self.teacher_momentum is not None:
            values["teacher_momentum"] = cosine(self.teacher_momentum, self.final_teacher_momentum, run)
        if self.teacher_temp is not None:
            warm = self.teacher_temp_warmup_epochs
            p = progress(iteration, max(int(warm * epoch_length), 1) + 1) if warm > 0 else 1.0
            values["teacher_temp"] = linear(self.warmup_teacher_temp, self.teacher_temp, p)
            values["teacher_patch_temp"] = linear(self.warmup_teacher_patch_temp, self.teacher_patch_temp, p)
        if self.mask_alpha is not None:
            values["mask_alpha"] = cosine(*self.mask_alpha, run)
        if self.mask_r is not None:
            values["mask_r_t"] = linear(*self.mask_r, run)
        return values
