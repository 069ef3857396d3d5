"""Watch a self-supervised teacher during pretraining: k-NN accuracy every N epochs, collapse every epoch."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events

from ..metrics.representation import collapse_diagnostics, knn_accuracy, linear_probe_accuracy

__all__ = ["RepresentationMonitor"]

logger = logging.getLogger(__name__)

Batch = Any  # a dict with image and label entries, or an (images, labels) pair


class RepresentationMonitor:
    """Ignite handler: representation quality and collapse diagnostics of a teacher, as engine metrics.

    Every ``interval`` epochs (and after the last one) the labelled ``val_loader`` (and ``train_loader``
    when given) is passed through ``feature_fn``, and DINO's weighted k-NN accuracy (train -> val, or
    leave-one-out within the validation list when no ``train_loader`` is given) is written to
    ``engine.state.metrics[f"{prefix}knn_acc"]`` (and ``linear_probe_acc`` with ``linear_probe``).
    Every epoch the fixed ``probe_images`` go through ``teacher_targets_fn`` (one teacher forward), and
    :func:`~openus_monai.metrics.collapse_diagnostics` of its class targets lands in the metrics as
    ``f"{prefix}{name}"`` (those of its patch targets, the masked-patch term's, as ``f"{prefix}patch_{name}"``);
    a WARNING is logged when the teacher's output is near uniform (mean entropy above
    ``uniform_ratio * ln K``) or when one prototype takes most of the batch (the largest argmax share
    above ``dominant_share``): the two ways DINO/iBOT-style self-distillation collapses. Epoch-level
    loggers (MONAI's ``TensorBoardStatsHandler``, ``MLFlowHandler``) record the metrics when attached after
    this handler. Nothing here knows the engine's internals: the callables are the whole interface.

    Wiring for a pretraining method (``method`` a :class:`~openus_monai.methods.PretrainingMethod`; the
    pretraining bundle's ``train.json`` does this, see its ``monitor`` section)::

        RepresentationMonitor(method.features, val_loader, functools.partial(
            method.teacher_targets, temperature=teacher_temp, patch_temperature=teacher_patch_temp), probe_images)

    Args:
        feature_fn: ``images [B, C, H, W] -> features [B, D]`` (e.g. the teacher encoder's pooled last stage).
        val_loader: labelled images, batches as dicts (``image_key``, ``label_key``) or ``(images, labels)``.
        teacher_targets_fn: ``images [B, C, H, W] -> {"class": [B, K], "patch": [B * L, K], "features": [B, D]}``:
            the teacher's class targets (head output after centring and sharpening), optionally its patch
            targets (near-uniform ones leave the masked-patch term at ``ln K`` with nothing to learn) and its
            pooled features (else ``feature_fn`` gives them); e.g. ``OpenUSMethod.teacher_targets``. None: no
            collapse diagnostics.
        probe_images: a fixed batch ``[B, C, H, W]`` for the diagnostics (use B >= 16 so that shares mean something).
        train_loader: labelled reference set of the k-NN (the "memory bank"); None: leave-one-out on ``val_loader``.
        interval: epochs between k-NN evaluations.
        k, temperature: k-NN neighbours and vote temperature (DINO: 20, 0.07).
        linear_probe: also fit a logistic-regression probe (needs ``train_loader``).
        uniform_ratio: entropy / ln K above which the teacher counts as near uniform.
        dominant_share: argmax share of one prototype above which the teacher counts as collapsed onto it
            (the collapsed BUSI runs sat at 1.0; healthy ones, batch 16, peaked near 0.7).
        prefix: prefix of the metric names.
        device: where the images go (default: the engine's ``state.device`` if any, else CPU).
        image_key, label_key: keys of dict batches.
    """

    def __init__(
        self,
        feature_fn: Callable[[torch.Tensor], torch.Tensor],
        val_loader: Iterable[Batch] | None = None,
        teacher_targets_fn: Callable[[torch.Tensor], Mapping[str, torch.Tensor]] | None = None,
        probe_images: torch.Tensor | None = None,
        train_loader: Iterable[Batch] | None = None,
        interval: int = 5,
        k: int = 20,
        temperature: float = 0.07,
        linear_probe: bool = False,
        uniform_ratio: float = 0.9,
        dominant_share: float = 0.75,
        prefix: str = "monitor_",
        device: str | torch.device | None = None,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        if linear_probe and train_loader is None:
            raise ValueError("linear_probe needs a train_loader")
        if teacher_targets_fn is not None and probe_images is None:
            raise ValueError("teacher_targets_fn needs probe_images")
        self.feature_fn, self.teacher_targets_fn = feature_fn, teacher_targets_fn
        self.val_loader, self.train_loader, self.probe_images = val_loader, train_loader, probe_images
        self.interval, self.k, self.temperature, self.linear_probe = interval, k, temperature, linear_probe
        self.uniform_ratio, self.dominant_share, self.prefix = uniform_ratio, dominant_share, prefix
        self.device, self.image_key, self.label_key = device, image_key, label_key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _device(self, engine: Engine) -> torch.device:
        return torch.device(self.device or getattr(engine.state, "device", None) or "cpu")

    def _split(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, dict):
            return batch[self.image_key], batch[self.label_key]
        return batch[0], batch[1]

    @torch.no_grad()
    def extract(self, loader: Iterable[Batch], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``[N, D]`` (CPU, float32) and labels ``[N]`` of every batch of ``loader``."""
        feats, labels = [], []
        for batch in loader:
            images, y = self._split(batch)
            feats.append(self.feature_fn(torch.as_tensor(images).to(device)).float().flatten(1).cpu())
            labels.append(torch.as_tensor(y).long().flatten().cpu())
        return torch.cat(feats), torch.cat(labels)

    def knn_metrics(self, device: torch.device) -> dict[str, float]:
        """k-NN (and linear-probe) accuracy of the current features."""
        val_x, val_y = self.extract(self.val_loader, device)
        if self.train_loader is None:
            return {"knn_acc": knn_accuracy(val_x, val_y, val_x, val_y, self.k, self.temperature, leave_one_out=True)}
        train_x, train_y = self.extract(self.train_loader, device)
        out = {"knn_acc": knn_accuracy(train_x, train_y, val_x, val_y, self.k, self.temperature)}
        if self.linear_probe:
            out["linear_probe_acc"] = linear_probe_accuracy(train_x, train_y, val_x, val_y)
        return out

    @torch.no_grad()
    def collapse_metrics(self, device: torch.device) -> dict[str, dict[str, float]]:
        """Collapse diagnostics of the teacher's targets on the probe batch: ``{"class": ..., "patch": ...}``
        (``"patch"`` when the targets have it; its rows are patch tokens; ``"class"`` holds the features' spread)."""
        images = self.probe_images.to(device)
        targets = self.teacher_targets_fn(images)
        features = targets["features"] if targets.get("features") is not None else self.feature_fn(images)
        diags = {"class": collapse_diagnostics(targets["class"].float().cpu(), features.float().cpu())}
        if targets.get("patch") is not None:
            diags["patch"] = collapse_diagnostics(targets["patch"].float().cpu())
        return diags

    def warn_if_collapsed(self, epoch: int, diag: dict[str, float], what: str = "teacher output") -> None:
        """Log a WARNING for near-uniform or single-prototype distributions (``diag`` from :func:`collapse_diagnostics`)."""
        log_k = diag["entropy"] + diag["kl_uniform"]
        if diag["entropy_ratio"] > self.uniform_ratio:
            logger.warning(
                "epoch %d: %s: near uniform (entropy %.3f of ln K = %.3f): the self-distillation "
                "terms have collapsed and carry no signal", epoch, what, diag["entropy"], log_k,
            )
        if diag["max_prototype_share"] > self.dominant_share:
            logger.warning(
                "epoch %d: %s: one prototype takes %.0f%% of the probe batch (%d of %d prototypes used): the teacher "
                "maps different inputs to the same output", epoch, what, 100 * diag["max_prototype_share"], diag["prototypes_used"],
                round(math.exp(log_k)),
            )

    def __call__(self, engine: Engine) -> None:
        device, epoch = self._device(engine), engine.state.epoch
        metrics: dict[str, float] = {}
        if self.teacher_targets_fn is not None:
            diags = self.collapse_metrics(device)
            metrics |= diags["class"]
            self.warn_if_collapsed(epoch, diags["class"])
            if "patch" in diags:
                metrics |= {f"patch_{k}": v for k, v in diags["patch"].items()}
                self.warn_if_collapsed(epoch, diags["patch"], "teacher patch targets")
        last = engine.state.max_epochs is not None and epoch >= engine.state.max_epochs
        if self.val_loader is not None and (epoch % self.interval == 0 or last):
            metrics |= self.knn_metrics(device)
            logger.info("epoch %d: " + ", ".join(f"{k} %.4f" for k in ("knn_acc", "linear_probe_acc") if k in metrics), epoch,
                        *[metrics[k] for k in ("knn_acc", "linear_probe_acc") if k in metrics])
        engine.state.metrics.update({f"{self.prefix}{k}": v for k, v in metrics.items()})
