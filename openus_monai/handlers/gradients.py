"""Gradient handlers that run between backward and the optimizer step (``IterationEvents.BACKWARD_COMPLETED``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

__all__ = ["FreezeLastLayerHandler", "PerParameterGradClipHandler"]


def _grads(engine: Engine) -> list[torch.Tensor]:
    return [p.grad for group in engine.optimizer.param_groups for p in group["params"] if p.grad is not None]


class PerParameterGradClipHandler:
    """Scale each parameter's gradient so that its own norm is at most ``max_norm`` (DINO's ``clip_gradients``;
    ``torch.nn.utils.clip_grad_norm_`` clips the norm of all gradients together, which is a different rule).

    Runs on ``BACKWARD_COMPLETED`` over the optimizer's parameters (after the engine's non-finite check, so a
    skipped step has no gradients left to clip).

    Args:
        max_norm: the largest norm of a parameter's gradient (0: no clipping).
    """

    def __init__(self, max_norm: float = 3.0) -> None:
        self.max_norm = float(max_norm)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    @torch.no_grad()
    def __call__(self, engine: Engine) -> None:
        grads = _grads(engine)
        if self.max_norm <= 0 or not grads:
            return
        norms = torch._foreach_norm(grads)
        torch._foreach_mul_(grads, [torch.clamp(self.max_norm / (n + 1e-6), max=1.0) for n in norms])


class FreezeLastLayerHandler:
    """Drop the gradients of ``module``'s parameters whose names start with ``prefixes`` during the first
    ``epochs`` epochs (DINO/iBOT keep the prototypes fixed at the start), on ``BACKWARD_COMPLETED``; the
    optimizer then leaves them alone (no update, no weight decay).

    Args:
        module: e.g. the student's iBOT head.
        epochs: epochs with frozen prototypes (0: never).
        prefixes: parameter-name prefixes inside ``module``.
    """

    def __init__(self, module: nn.Module, epochs: int = 1, prefixes: Sequence[str] = ("last_layer",)) -> None:
        self.params = [p for name, p in module.named_parameters() if name.startswith(tuple(prefixes))]
        if epochs > 0 and not self.params:
            raise ValueError(f"no parameter of {type(module).__name__} starts with {tuple(prefixes)}")
        self.epochs = int(epochs)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.epoch <= self.epochs:
            for p in self.params:
                p.grad = None
