"""The contract between a pretraining method and :class:`~openus_monai.engines.PretrainingEngine`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn as nn

__all__ = ["PretrainingMethod"]

Autocast = Callable[[], AbstractContextManager]


class PretrainingMethod(nn.Module):
    """A self-supervised pretraining method: it owns its networks, ALL of its losses, its teacher update and any
    per-method state, so that the engine that runs it knows nothing of it.

    One call, :meth:`forward`, runs the networks on a batch and returns the named loss terms and their weighted
    total; the engine then does the backward pass, the non-finite check, the optimizer step and fires MONAI's
    ``IterationEvents``. Keeping backward in the engine (where DINOv2's ``forward_backward`` does it inside the
    method) keeps the gradient scaler, the all-reduced non-finite decision and the events in one place: a method
    needs one backward per step, so nothing is gained by owning it. After a good step the engine calls
    :meth:`update` (teacher EMA, centres, memories); after a skipped step, :meth:`rewind` (undo whatever
    :meth:`forward` advanced, e.g. a random generator), so a skipped step leaves no trace.

    State that must survive a resume and is not a parameter or buffer (a loss memory, a random generator)
    belongs in ``get_extra_state`` / ``set_extra_state``, so it is checkpointed with the model
    (the ``network`` entry of the bundle's checkpoints).

    Subclasses set:
        required_keys: batch keys :meth:`forward` reads (checked by :meth:`check_batch`); the data pipeline
            of the bundle must produce them (it is chosen with the method, in the same config).
        device_keys: those the engine moves to the device (None: all of ``required_keys``).
        student: the module the optimizer trains, the one ``DistributedDataParallel`` wraps
            (:meth:`wrap_student`); run it through :meth:`run_student`.
        export_encoder: the encoder written as the pretrained backbone (its pooled output is :meth:`features`).

    Methods with a self-distillation teacher also offer ``teacher_targets(images, temperature, patch_temperature)
    -> {"class": [B, K], "patch": [B * L, K], "features": [B, D]}`` (one teacher forward), what
    :class:`~openus_monai.handlers.RepresentationMonitor` checks for collapse.
    """

    required_keys: tuple[str, ...] = ()
    device_keys: tuple[str, ...] | None = None
    _student_wrapper: nn.Module | None = None

    @property
    def export_encoder(self) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must name the encoder to export")

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features of :attr:`export_encoder` (in eval mode), for k-NN / linear-probe monitoring.

        Args:
            images: ``[B, C, H, W]``.

        Returns:
            ``[B, D]``: the last stage map averaged over space (``[B, D, h, w]`` outputs), the mean token
            (``[B, L, D]`` outputs), or the flattened output.
        """
        encoder = self.export_encoder
        training = encoder.training
        encoder.eval()
        try:
            out = encoder(images)
        finally:
            encoder.train(training)
        if isinstance(out, (list, tuple)):
            out = out[-1]
        if out.ndim == 4:
            return out.mean((2, 3))
        return out.mean(1) if out.ndim == 3 else out.flatten(1)

    def wrap_student(self, wrapper: nn.Module | None) -> None:
        """Run the student through ``wrapper`` (e.g. ``DistributedDataParallel(method.student)``); the
        wrapper is not registered as a submodule, so ``state_dict`` keeps the unwrapped names."""
        object.__setattr__(self, "_student_wrapper", wrapper)

    def run_student(self, *args, **kwargs):
        """The student's forward, through the wrapper when there is one."""
        student = self._student_wrapper if self._student_wrapper is not None else self.student
        return student(*args, **kwargs)

    def check_batch(self, batch: Mapping[str, object]) -> None:
        """Raise a ``KeyError`` naming the :attr:`required_keys` the batch lacks."""
        missing = [k for k in self.required_keys if k not in batch]
        if missing:
            raise KeyError(f"{type(self).__name__} needs batch keys {missing}; the batch has {sorted(batch)} (is the data pipeline the method's?)")

    def forward(
        self, batch: Mapping[str, torch.Tensor], schedule: Mapping[str, float], autocast: Autocast = nullcontext
    ) -> dict[str, torch.Tensor]:
        """One step's losses.

        Args:
            batch: the collated batch (``device_keys`` already on the device).
            schedule: this iteration's values from :class:`~openus_monai.handlers.PretrainingSchedule`.
            autocast: a context factory for the parts to run in low precision (losses stay float32).

        Returns:
            ``loss`` (the weighted total, a 0-dim tensor), each named term as ``loss_<name>`` (0-dim), and
            whatever :meth:`update` needs (any other key); an optional ``images`` entry, a dict of small
            CPU tensors (e.g. ``view``, ``reconstruction`` ``[1, C, H, W]``), is passed on for pictures.
        """
        raise NotImplementedError

    def update(self, outputs: Mapping[str, torch.Tensor], schedule: Mapping[str, float]) -> None:
        """After the optimizer step of a good iteration (default: nothing)."""

    def rewind(self) -> None:
        """After a skipped iteration: undo what :meth:`forward` advanced (default: nothing)."""
