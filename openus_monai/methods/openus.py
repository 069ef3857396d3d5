"""OpenUS: self-adaptive masked contrastive learning (iBOT self-distillation + masked pixel reconstruction)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import torch

from ..losses.ibot import IBOTLoss
from ..losses.reconstruction import masked_reconstruction_loss
from ..networks.pretrain import OpenUSMetaArch
from ..networks.vmamba import VMamba
from ..transforms.masking import cell_masks_to_tokens
from .base import Autocast, PretrainingMethod
from .ema import TeacherEMA
from .masking import SelfAdaptiveMasking

__all__ = ["OpenUSMethod"]

LOSS_TERMS = ("cls", "patch", "rec_global", "rec_local")


class OpenUSMethod(OpenUSMetaArch, PretrainingMethod):
    """The OpenUS method: networks (``student``, ``teacher``), iBOT loss with its centres (``ibot_loss``), the
    self-adaptive masking and the teacher EMA.

    One step: teacher (no grad) on the global views -> attention scores -> masks from ``masking`` (alpha, r_t
    of the schedule) -> student on the masked global and local views -> iBOT class + patch losses and masked
    reconstruction of the global and local views. After a good optimizer step (:meth:`update`): teacher EMA
    (``teacher_momentum``), centre update, the student's per-cell loss recorded in the masking memory.

    Batches come from :class:`~openus_monai.transforms.MultiViewCropd` and
    :class:`~openus_monai.transforms.RandomBlockMaskd`: ``global_views [B, G, C, H, W]``, ``global_boxes
    [B, G, 5]``, ``local_views [B, V, C, h, w]``, ``local_masks [B, V, h/cell, w/cell]``, ``index [B]``.
    The schedule must give ``teacher_temp``, ``teacher_patch_temp``, ``teacher_momentum``, ``mask_alpha``, ``mask_r_t``.

    The state dict holds the networks, the centres and (extra state) the masking's loss memory and generator.

    Args:
        encoder: the student's :class:`~openus_monai.networks.VMamba`.
        out_dim, hidden_dim, bottleneck_dim: iBOT head sizes.
        student_temp, center_momentum, centering: see :class:`~openus_monai.losses.IBOTLoss`.
        masking: the :class:`~openus_monai.methods.SelfAdaptiveMasking` (required to train).
        loss_weights: weights of ``cls``, ``patch``, ``rec_global``, ``rec_local`` (default 1 each).
        mask_cell: mask cell size in pixels.
    """

    required_keys = ("global_views", "global_boxes", "local_views", "local_masks", "index")
    device_keys = ("global_views", "local_views", "local_masks")

    def __init__(
        self,
        encoder: VMamba,
        out_dim: int = 8192,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        masking: SelfAdaptiveMasking | None = None,
        loss_weights: Mapping[str, float] | None = None,
        mask_cell: int = 32,
        centering: str = "mean",
    ) -> None:
        super().__init__(encoder, out_dim, hidden_dim, bottleneck_dim)
        self.ibot_loss = IBOTLoss(out_dim, student_temp, center_momentum, centering)
        self.masking, self.mask_cell = masking, mask_cell
        self.ema = TeacherEMA(self.student, self.teacher)
        unknown = set(loss_weights or {}) - set(LOSS_TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; OpenUS has {LOSS_TERMS}")
        self.loss_weights = dict.fromkeys(LOSS_TERMS, 1.0) | dict(loss_weights or {})

    @property
    def export_encoder(self) -> torch.nn.Module:
        return self.teacher.encoder

    @torch.no_grad()
    def teacher_targets(
        self, images: torch.Tensor, temperature: float, patch_temperature: float | None = None
    ) -> dict[str, torch.Tensor]:
        """The teacher's centred, sharpened targets (what the student is trained to match) and its pooled
        features, from one teacher forward.

        Args:
            images: ``[B, C, H, W]`` (whole images or global views).
            temperature: the teacher temperature of the class targets.
            patch_temperature: that of the patch targets (default: ``temperature``).

        Returns:
            ``{"class": [B, K], "patch": [B * L, K], "features": [B, D]}``: class probabilities, patch
            probabilities (one row per last-stage token), and the last stage averaged over space (what
            :meth:`features` gives).
        """
        last = self.teacher.encoder(images)[-1]  # [B, D, h, w]; the teacher is always in eval mode
        cls, patch = self.teacher.project(last)
        patch_temperature = temperature if patch_temperature is None else patch_temperature
        cls_probs, patch_probs = self.ibot_loss.teacher_probs(cls.float(), patch.float(), temperature, patch_temperature)
        return {"class": cls_probs, "patch": patch_probs.flatten(0, 1), "features": last.mean((2, 3))}

    def forward(
        self, batch: Mapping[str, torch.Tensor], schedule: Mapping[str, float], autocast: Autocast = nullcontext
    ) -> dict[str, Any]:
        if self.masking is None:
            raise RuntimeError("OpenUSMethod needs a masking (SelfAdaptiveMasking) to train")
        views, local, local_masks = batch["global_views"], batch["local_views"], batch["local_masks"]
        boxes, index = batch["global_boxes"], batch["index"]
        size, n_global = views.shape[:2]
        n_local = local.shape[1]
        views_flat = views.transpose(0, 1).flatten(0, 1)  # view-major [G * B, C, H, W]
        local_flat = local.transpose(0, 1).flatten(0, 1)
        local_masks = local_masks.transpose(0, 1).flatten(0, 1)
        grid = (views.shape[-2] // self.mask_cell, views.shape[-1] // self.mask_cell)

        with autocast():
            t_cls, t_patch, scores = self.teacher(views_flat)
        t_cls_p, t_patch_p = self.ibot_loss.teacher_probs(t_cls.float(), t_patch.float(), schedule["teacher_temp"], schedule["teacher_patch_temp"])
        scores = scores.view(n_global, size, -1).transpose(0, 1)
        masks = self.masking.generate(scores, boxes, index, grid, alpha=schedule["mask_alpha"], r_t=schedule["mask_r_t"])  # [B, G, h, w]
        masks_flat = masks.transpose(0, 1).flatten(0, 1)

        with autocast():
            (s_cls, s_patch, rec), (s_cls_local, _, rec_local) = self.run_student(views_flat, masks_flat, local_flat, local_masks)
        tokens = t_patch.shape[1]
        cls_loss, patch_loss = self.ibot_loss(
            t_cls_p.view(n_global, size, -1),
            t_patch_p.view(n_global, size, tokens, -1),
            torch.cat([s_cls.view(n_global, size, -1), s_cls_local.view(n_local, size, -1)]),
            s_patch.view(n_global, size, tokens, -1),
            cell_masks_to_tokens(masks_flat, tokens).view(n_global, size, tokens),
            n_global,
        )
        rec_global, cell_loss = masked_reconstruction_loss(rec, views_flat, masks_flat)
        rec_local_loss, _ = masked_reconstruction_loss(rec_local, local_flat, local_masks)
        terms = {"cls": cls_loss, "patch": patch_loss, "rec_global": rec_global, "rec_local": rec_local_loss}
        return {
            "loss": sum(self.loss_weights[k] * v for k, v in terms.items()),
            **{f"loss_{k}": v for k, v in terms.items()},
            "teacher_cls": t_cls,
            "teacher_patch": t_patch,
            "cell_loss": cell_loss.view(n_global, size, *grid).transpose(0, 1),
            "masks": masks,
            "boxes": boxes,
            "index": index,
            "images": {"view": views_flat[:1].detach().float().cpu(), "reconstruction": rec[:1].detach().float().cpu()},
        }

    def update(self, outputs: Mapping[str, Any], schedule: Mapping[str, float]) -> None:
        """Teacher EMA, iBOT centres, and the masking memory, after the optimizer step."""
        self.ema.update(schedule["teacher_momentum"])
        self.ibot_loss.update_center(outputs["teacher_cls"], outputs["teacher_patch"])
        self.masking.record(outputs["cell_loss"], outputs["masks"], outputs["boxes"], outputs["index"])

    def rewind(self) -> None:
        if self.masking is not None:
            self.masking.rewind()

    def get_extra_state(self) -> dict[str, Any]:
        return {"masking": self.masking.state_dict()} if self.masking is not None else {}

    def set_extra_state(self, state: Mapping[str, Any]) -> None:
        if "masking" in state and self.masking is not None:
            self.masking.load_state_dict(state["masking"])
