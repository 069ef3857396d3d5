"""iBOT's self-distillation loss (class and masked-patch terms) with its own centring state."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from ignite import distributed as idist

__all__ = ["IBOTLoss"]


class IBOTLoss(nn.Module):
    """Cross-entropy between centred, sharpened teacher softmaxes and student log-softmaxes.

    Class term: every teacher global view against every *other* student view (global and local).
    Patch term: each global view's teacher patch distribution against the student's on the same
    view, averaged over the tokens the student had masked. Centres are running means of the teacher's
    outputs (class and patch separately), all-reduced across processes under DDP.

    Args:
        out_dim: number of prototypes ``K``.
        student_temp: student temperature (0.1, as iBOT and the original OpenUS code).
        center_momentum: EMA momentum of the centres.
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("center_patch", torch.zeros(1, 1, out_dim))

    @torch.no_grad()
    def teacher_probs(self, cls: torch.Tensor, patch: torch.Tensor, temp: float, patch_temp: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Centred, sharpened teacher distributions: ``[N, K]`` and ``[N, L, K]``."""
        return F.softmax((cls - self.center) / temp, dim=-1), F.softmax((patch - self.center_patch) / patch_temp, dim=-1)

    def forward(
        self,
        teacher_cls: torch.Tensor,
        teacher_patch: torch.Tensor,
        student_cls: torch.Tensor,
        student_patch: torch.Tensor,
        masks: torch.Tensor,
        n_global: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            teacher_cls: teacher probabilities of the global views ``[G, B, K]``.
            teacher_patch: teacher patch probabilities ``[G, B, L, K]``.
            student_cls: student logits of all views, globals first ``[V, B, K]``.
            student_patch: student patch logits of the global views ``[G, B, L, K]``.
            masks: tokens masked in the student's global views ``[G, B, L]`` bool.
            n_global: ``G``.

        Returns:
            ``(class_loss, patch_loss)`` scalars.
        """
        log_student = F.log_softmax(student_cls.float() / self.student_temp, dim=-1)
        cls_terms = [
            -(teacher_cls[q] * log_student[v]).sum(-1).mean()
            for q in range(n_global)
            for v in range(log_student.shape[0])
            if v != q
        ]
        cls_loss = torch.stack(cls_terms).mean()

        weight = masks.float()
        per_token = -(teacher_patch * F.log_softmax(student_patch.float() / self.student_temp, dim=-1)).sum(-1)
        per_image = (per_token * weight).sum(-1) / weight.sum(-1).clamp_min(1.0)
        has_mask = (weight.sum(-1) > 0).float()
        patch_loss = (per_image * has_mask).sum() / has_mask.sum().clamp_min(1.0)
        return cls_loss, patch_loss

    @torch.no_grad()
    def update_center(self, teacher_cls_logits: torch.Tensor, teacher_patch_logits: torch.Tensor) -> None:
        """EMA of the teacher's raw outputs ``[N, K]`` and ``[N, L, K]`` (batch means all-reduced under DDP).

        The first update (centre still all zero) sets the centres to the batch means."""
        cls_sum = teacher_cls_logits.float().sum(0, keepdim=True)
        patch_sum = teacher_patch_logits.float().mean(1).sum(0, keepdim=True)[:, None]
        count = torch.tensor(float(teacher_cls_logits.shape[0]), device=cls_sum.device)
        if idist.get_world_size() > 1:
            cls_sum, patch_sum, count = idist.all_reduce(cls_sum), idist.all_reduce(patch_sum), idist.all_reduce(count)
        # A centre still at its zero initialisation takes the first batch mean whole: the teacher's initial
        # outputs share a large image-independent component, and until the running mean has absorbed it one
        # prototype wins for every image, which the student learns as a constant target (collapse).
        m = self.center_momentum if bool(self.center.any()) else 0.0
        self.center.mul_(m).add_(cls_sum / count, alpha=1 - m)
        self.center_patch.mul_(m).add_(patch_sum / count, alpha=1 - m)
