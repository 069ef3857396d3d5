"""iBOT's self-distillation loss (class and masked-patch terms) with its own centring state."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from ignite import distributed as idist

__all__ = ["CENTERINGS", "IBOTLoss", "sinkhorn_knopp"]

#: how the teacher's outputs are centred: iBOT's running mean, or DINOv2's Sinkhorn-Knopp normalisation
CENTERINGS = ("mean", "sinkhorn_knopp")


def _all_logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``logsumexp`` over ``dim`` and over all processes (``dim`` is the one split across processes)."""
    if idist.get_world_size() == 1:
        return torch.logsumexp(x, dim, keepdim=True)
    peak = idist.all_reduce(x.amax(dim, keepdim=True), op="MAX")
    return peak + idist.all_reduce((x - peak).exp().sum(dim, keepdim=True)).log()


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, temp: float, n_iterations: int = 3) -> torch.Tensor:
    """Teacher targets that spread over the prototypes: DINOv2's Sinkhorn-Knopp centring.

    Alternately rescales ``exp(logits / temp)`` so that every prototype holds the same share of the batch
    (columns) and every row is a distribution (rows), ``n_iterations`` times. Computed in the log domain,
    so that the small teacher temperatures of the CPU presets (0.01) neither overflow nor leave a prototype
    with an all-zero column. Under DDP the batch is the batch of all processes.

    Args:
        logits: ``[N, K]`` teacher outputs (``N`` rows of one process).
        temp: the teacher temperature.
        n_iterations: rescaling rounds (3, as DINOv2).

    Returns:
        ``[N, K]`` float32 probabilities, each row summing to 1.
    """
    log_q = logits.float() / temp
    rows = torch.tensor(float(log_q.shape[0]), device=log_q.device)
    if idist.get_world_size() > 1:
        rows = idist.all_reduce(rows)
    log_k, log_rows = math.log(log_q.shape[1]), torch.log(rows)
    for _ in range(n_iterations):
        log_q = log_q - _all_logsumexp(log_q, 0) - log_k  # every prototype holds 1 / K of the mass
        log_q = log_q - torch.logsumexp(log_q, 1, keepdim=True) - log_rows  # every row holds 1 / N
    return (log_q + log_rows).exp()


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
        centering: ``"mean"`` (iBOT's and the paper's: subtract the running centre, then softmax) or
            ``"sinkhorn_knopp"`` (DINOv2's: :func:`sinkhorn_knopp` over the batch's class outputs, and over all
            its patch tokens; the running centres are still updated, so that a run can switch back).
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9, centering: str = "mean") -> None:
        super().__init__()
        if centering not in CENTERINGS:
            raise ValueError(f"centering must be one of {CENTERINGS}, got {centering!r}")
        self.student_temp, self.center_momentum, self.centering = student_temp, center_momentum, centering
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("center_patch", torch.zeros(1, 1, out_dim))

    @torch.no_grad()
    def teacher_probs(self, cls: torch.Tensor, patch: torch.Tensor, temp: float, patch_temp: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Centred, sharpened teacher distributions: ``[N, K]`` and ``[N, L, K]``."""
        if self.centering == "sinkhorn_knopp":
            return sinkhorn_knopp(cls, temp), sinkhorn_knopp(patch.flatten(0, 1), patch_temp).view(patch.shape)
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
