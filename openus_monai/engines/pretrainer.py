"""The OpenUS pretraining engine: one iteration of self-adaptive masked contrastive learning."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.engines import Trainer
from monai.engines.utils import default_prepare_batch
from ignite import distributed as idist
from torch.optim import Optimizer

from ..handlers.masking import SelfAdaptiveMaskingHandler
from ..handlers.schedules import linear, progress, warmup_cosine
from ..losses.reconstruction import masked_reconstruction_loss
from ..io import atomic_torch_save
from ..networks.pretrain import OpenUSMetaArch
from .nonfinite import NonFiniteGuard, NonFiniteLossError, finite_flags

__all__ = ["NonFiniteLossError", "OpenUSPretrainer"]

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


class OpenUSPretrainer(Trainer):
    """MONAI/Ignite trainer whose iteration is OpenUS pretraining.

    teacher (no grad) on the global views -> attention scores -> masks from ``masking`` -> student on the
    masked global and local views -> iBOT class + patch losses and masked reconstruction -> AdamW step with
    per-parameter gradient clipping -> the student's per-cell loss is recorded by ``masking``. The teacher
    EMA is a separate handler (:class:`~openus_monai.handlers.TeacherEMAHandler`). Every schedule (lr,
    weight decay, teacher temperatures) is a function of the global iteration.

    Batches are dictionaries from :class:`~openus_monai.transforms.MultiViewCropd` and
    :class:`~openus_monai.transforms.RandomBlockMaskd`: ``global_views [B, G, C, H, W]``, ``global_boxes
    [B, G, 5]``, ``local_views [B, V, C, h, w]``, ``local_masks [B, V, h/cell, w/cell]``, ``index [B]``.

    Args:
        device: where to train.
        max_epochs: epochs.
        train_data_loader: the loader.
        network: the :class:`~openus_monai.networks.OpenUSMetaArch`.
        optimizer: over the student's parameters; groups may carry ``lr_scale`` / ``wd_scale``.
        masking: the :class:`~openus_monai.handlers.SelfAdaptiveMaskingHandler` (attached here).
        student_wrapper: what runs the student's forward, e.g. ``DistributedDataParallel(network.student)``
            (default: ``network.student``); checkpoints keep the unwrapped names.
        lr, min_lr, warmup_epochs: peak learning rate, final learning rate, linear warm-up length.
        weight_decay, final_weight_decay: cosine weight-decay schedule (equal values: constant).
        teacher_temp, warmup_teacher_temp, teacher_patch_temp, warmup_teacher_patch_temp, teacher_temp_warmup_epochs:
            teacher temperatures, warmed linearly over the given epochs.
        loss_weights: weights of ``cls``, ``patch``, ``rec_global``, ``rec_local``.
        clip_grad: per-parameter gradient-norm clip (0: none).
        freeze_last_layer_epochs: epochs during which the prototypes get no update.
        mask_cell: mask cell size in pixels.
        max_nonfinite: consecutive non-finite steps tolerated before stopping. A step whose loss or gradient is
            not finite (on any process) is skipped without trace: no optimizer step, teacher EMA, centre update
            or loss-memory write, and the masking handler's random generator is rewound. The one that makes
            ``max_nonfinite`` in a row raises :class:`~openus_monai.engines.NonFiniteLossError`, after rank 0
            wrote the last good state (the keys of the bundle's checkpoints: ``network``, ``optimizer``,
            ``trainer`` at the last good iteration, ``masking``) to ``nonfinite_checkpoint_dir``.
        nonfinite_checkpoint_dir: where that checkpoint goes (``pretrain_last_good_iteration=N.pt``); None: none.
        deterministic_seed: if set, reseed torch at every iteration and the data transforms and sampler at
            every epoch from it, so that a resumed run repeats the uninterrupted one (with ``num_workers=0``).
        amp: autocast: ``True`` (bfloat16 on CUDA, off on CPU), ``"bf16"`` or ``"fp16"`` (on any device; fp16
            with a ``GradScaler``), False. Losses, centres, the scan and the attention scores stay float32.
        epoch_length, non_blocking, prepare_batch, iteration_update, handlers: as :class:`monai.engines.Trainer`.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader,
        network: OpenUSMetaArch,
        optimizer: Optimizer,
        masking: SelfAdaptiveMaskingHandler,
        student_wrapper: torch.nn.Module | None = None,
        lr: float = 5e-4,
        min_lr: float = 1e-6,
        warmup_epochs: float = 30,
        weight_decay: float = 0.04,
        final_weight_decay: float = 0.04,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        teacher_patch_temp: float = 0.07,
        warmup_teacher_patch_temp: float = 0.04,
        teacher_temp_warmup_epochs: float = 30,
        loss_weights: dict[str, float] | None = None,
        clip_grad: float = 3.0,
        freeze_last_layer_epochs: int = 1,
        mask_cell: int = 32,
        max_nonfinite: int = 5,
        nonfinite_checkpoint_dir: str | os.PathLike | None = None,
        deterministic_seed: int | None = None,
        amp: bool | str = False,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        handlers: Sequence | None = None,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            handlers=handlers,
            amp=False,  # MONAI's GradScaler path is for fp16; bf16 autocast needs none
            decollate=False,
        )
        self.network, self.optimizer, self.masking = network, optimizer, masking
        self.student = student_wrapper if student_wrapper is not None else network.student
        self.lr, self.min_lr, self.warmup_epochs = lr, min_lr, warmup_epochs
        self.weight_decay, self.final_weight_decay = weight_decay, final_weight_decay
        self.teacher_temps = (warmup_teacher_temp, teacher_temp, warmup_teacher_patch_temp, teacher_patch_temp, teacher_temp_warmup_epochs)
        self.loss_weights = {"cls": 1.0, "patch": 1.0, "rec_global": 1.0, "rec_local": 1.0} | dict(loss_weights or {})
        self.clip_grad, self.freeze_last_layer_epochs = clip_grad, freeze_last_layer_epochs
        self.mask_cell, self.nonfinite, self.nonfinite_checkpoint_dir = mask_cell, NonFiniteGuard(max_nonfinite), nonfinite_checkpoint_dir
        self.deterministic_seed = deterministic_seed
        self.amp_dtype = amp_dtype(amp, device)
        self.scaler = torch.amp.GradScaler(torch.device(device).type) if self.amp_dtype == torch.float16 else None
        masking.attach(self)
        if deterministic_seed is not None:
            self.add_event_handler(Events.EPOCH_STARTED, self._seed_epoch)

    # -- schedules ------------------------------------------------------------------------------------------
    def schedules(self, iteration: int) -> dict[str, float]:
        """lr, weight decay and teacher temperatures at 1-based ``iteration``."""
        per_epoch = self.state.epoch_length
        total = self.state.max_epochs * per_epoch
        warm_t0, temp, warm_p0, patch_temp, temp_epochs = self.teacher_temps
        temp_p = progress(iteration, max(int(temp_epochs * per_epoch), 1) + 1) if temp_epochs > 0 else 1.0
        return {
            "lr": warmup_cosine(self.lr, self.min_lr, iteration, total, int(self.warmup_epochs * per_epoch)),
            "weight_decay": warmup_cosine(self.weight_decay, self.final_weight_decay, iteration, total, 0),
            "teacher_temp": linear(warm_t0, temp, temp_p),
            "teacher_patch_temp": linear(warm_p0, patch_temp, temp_p),
        }

    def _apply_optimizer_schedule(self, lr: float, weight_decay: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
            group["weight_decay"] = weight_decay * group.get("wd_scale", 1.0 if group.get("weight_decay", 0) else 0.0)

    def _seed_epoch(self, engine: Engine) -> None:
        seed = self.deterministic_seed + engine.state.epoch
        torch.manual_seed(seed)  # a sampler without its own generator draws its order from here
        loader = engine.state.dataloader
        for obj in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(engine.state.epoch)
        transform = getattr(getattr(loader, "dataset", None), "transform", None)
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=seed)

    # -- one iteration ----------------------------------------------------------------------------------------
    def _grads(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The student's gradients and their norms."""
        grads = [p.grad for p in self.network.student.parameters() if p.grad is not None]
        return grads, list(torch._foreach_norm(grads)) if grads else []

    def _clip_and_freeze(self, grads: list[torch.Tensor], norms: list[torch.Tensor]) -> None:
        student = self.network.student
        if self.clip_grad > 0 and grads:
            torch._foreach_mul_(grads, [torch.clamp(self.clip_grad / (n + 1e-6), max=1.0) for n in norms])
        if self.state.epoch <= self.freeze_last_layer_epochs:
            for name, p in student.head.named_parameters():
                if name.startswith(("last_layer", "last_layer2")):
                    p.grad = None

    def _iteration(self, engine: Engine, batchdata: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """One pretraining step. Returns a one-item list of floats (loss terms, schedules), MONAI's decollated
        convention, so stock handlers such as ``from_engine(["loss"], first=True)`` read it."""
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        iteration = engine.state.iteration
        if self.deterministic_seed is not None:
            torch.manual_seed(self.deterministic_seed * 1_000_003 + iteration)
        sched = self.schedules(iteration)
        device, nb = engine.state.device, engine.non_blocking
        views = batchdata["global_views"].to(device, non_blocking=nb)
        local = batchdata["local_views"].to(device, non_blocking=nb)
        local_masks = batchdata["local_masks"].to(device, non_blocking=nb)
        boxes, index = batchdata["global_boxes"], batchdata["index"]
        batch, n_global = views.shape[:2]
        n_local = local.shape[1]
        views_flat = views.transpose(0, 1).flatten(0, 1)  # view-major [G * B, C, H, W]
        local_flat = local.transpose(0, 1).flatten(0, 1)
        grid = (views.shape[-2] // self.mask_cell, views.shape[-1] // self.mask_cell)
        net = self.network
        autocast = torch.autocast(device_type=torch.device(device).type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None)

        clock = _PhaseClock()
        with autocast:
            t_cls, t_patch, scores = net.teacher(views_flat)
        t_cls_p, t_patch_p = net.ibot_loss.teacher_probs(t_cls.float(), t_patch.float(), sched["teacher_temp"], sched["teacher_patch_temp"])
        scores = scores.view(n_global, batch, -1).transpose(0, 1)
        clock.lap("teacher")
        masks = self.masking.generate(scores, boxes, index, grid)  # [B, G, h, w]
        masks_flat = masks.transpose(0, 1).flatten(0, 1)
        clock.lap("masking")

        local_masks = local_masks.transpose(0, 1).flatten(0, 1)
        net.train()
        with autocast:
            (s_cls, s_patch, rec), (s_cls_local, _, rec_local) = self.student(views_flat, masks_flat, local_flat, local_masks)
        tokens = t_patch.shape[1]
        token_masks = _to_token_grid(masks_flat, tokens).view(n_global, batch, tokens)
        cls_loss, patch_loss = net.ibot_loss(
            t_cls_p.view(n_global, batch, -1),
            t_patch_p.view(n_global, batch, tokens, -1),
            torch.cat([s_cls.view(n_global, batch, -1), s_cls_local.view(n_local, batch, -1)]),
            s_patch.view(n_global, batch, tokens, -1),
            token_masks,
            n_global,
        )
        rec_global, cell_loss = masked_reconstruction_loss(rec, views_flat, masks_flat)
        rec_local_loss, _ = masked_reconstruction_loss(rec_local, local_flat, local_masks)
        terms = {"cls": cls_loss, "patch": patch_loss, "rec_global": rec_global, "rec_local": rec_local_loss}
        loss = sum(self.loss_weights[k] * v for k, v in terms.items())

        clock.lap("student")
        self.optimizer.zero_grad(set_to_none=True)
        # backward even for a non-finite loss: under DDP every process must run it (the gradients are dropped)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grads, norms = self._grads()
        loss_ok, grads_ok = finite_flags([loss], norms)  # the same answer on every process
        if not (loss_ok and grads_ok):
            return self._skip_nonfinite(engine, terms, "loss" if not loss_ok else "gradient")
        self.nonfinite.passed(engine)
        self._clip_and_freeze(grads, norms)
        self._apply_optimizer_schedule(sched["lr"], sched["weight_decay"])  # here: a skipped step leaves the optimizer as it was
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        net.ibot_loss.update_center(t_cls, t_patch)
        self.masking.record(cell_loss.view(n_global, batch, *grid).transpose(0, 1), masks, boxes, index)
        clock.lap("backward")
        engine.state.phase_seconds = clock.laps

        output = {"loss": loss.item()} | {f"loss_{k}": v.item() for k, v in terms.items()} | sched
        output |= {"mask_alpha": self.masking.alpha(), "mask_r_t": self.masking.r_t()}
        engine.state.metrics.update({k: v for k, v in output.items() if k != "loss"})
        engine.state.pretrain_sample = {"view": views_flat[:1].detach().float().cpu(), "reconstruction": rec[:1].detach().float().cpu()}
        return [output]

    def _skip_nonfinite(self, engine: Engine, terms: dict[str, torch.Tensor], what: str) -> list[dict[str, Any]]:
        """Drop the step's gradients and masks; log it; stop (after writing the last good state) when too many."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.update()  # after unscale_: lowers the scale when the gradients overflowed
        self.masking.skip()
        detail = f"{what} (" + ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items()) + ")"
        if self.scaler is not None and what == "gradient":  # fp16 overflow: the scaler's business, not a fault
            engine.state.nonfinite_skipped = True
            logger.info("iteration %d: fp16 gradient overflow, step skipped, loss scale now %g", engine.state.iteration, self.scaler.get_scale())
        elif self.nonfinite.skipped(engine, detail):
            raise self.nonfinite.error(engine, detail, self._save_last_good())
        return [{"loss": math.nan, "skipped": 1.0}]

    def _save_last_good(self) -> str | None:
        """Rank 0 writes the last good state (nothing was changed since); every process waits for it."""
        if self.nonfinite_checkpoint_dir is None:
            return None
        trainer = self.state_dict()
        trainer["iteration"] = self.nonfinite.last_good
        path = os.path.join(os.fspath(self.nonfinite_checkpoint_dir), f"pretrain_last_good_iteration={self.nonfinite.last_good}.pt")
        if idist.get_rank() == 0:
            state = {"network": self.network, "optimizer": self.optimizer, "masking": self.masking}
            atomic_torch_save({k: v.state_dict() for k, v in state.items()} | {"trainer": trainer}, path)
        idist.barrier()
        return path


class _PhaseClock:
    """Wall time of consecutive phases of an iteration (read by ``benchmarks/bench_pretrain.py``)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self.last
        self.last = now


def _to_token_grid(masks: torch.Tensor, tokens: int) -> torch.Tensor:
    """Cell masks ``[N, h, w]`` on the token grid (``tokens`` cells): nearest resampling when they differ."""
    n, h, w = masks.shape
    if h * w == tokens:
        return masks.flatten(1)
    scale = math.sqrt(tokens / (h * w))
    size = (round(h * scale), round(w * scale))
    return F.interpolate(masks[:, None].float(), size=size, mode="nearest")[:, 0].bool().flatten(1)
