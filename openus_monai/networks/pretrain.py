"""The OpenUS pretraining meta-architecture: student, EMA teacher, heads and loss state in one module."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..losses.ibot import IBOTLoss
from .factory import set_trainable
from .heads import IBOTHead, ReconstructionHead
from .vmamba import STRIDE, VMamba

__all__ = ["OpenUSMetaArch"]


class OpenUSMetaArch(nn.Module):
    """Owns ``student`` (encoder, iBOT head with separate patch prototypes, reconstruction head),
    ``teacher`` (EMA encoder and head, shared prototypes, always in eval mode, no gradients) and the
    iBOT loss with its centres, so that one ``state_dict`` holds the whole pretraining model.

    Args:
        encoder: the student's :class:`VMamba` (the teacher starts as a copy of it).
        out_dim, hidden_dim, bottleneck_dim: iBOT head sizes.
        student_temp, center_momentum: see :class:`~openus_monai.losses.IBOTLoss`.
    """

    def __init__(
        self,
        encoder: VMamba,
        out_dim: int = 8192,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        width = encoder.num_features
        self.student = nn.ModuleDict(
            {
                "encoder": encoder,
                "head": IBOTHead(width, out_dim, hidden_dim, bottleneck_dim, separate_patch_layer=True),
                "reconstruction": ReconstructionHead(width, encoder.in_channels, STRIDE),
            }
        )
        teacher_head = IBOTHead(width, out_dim, hidden_dim, bottleneck_dim, separate_patch_layer=False)
        teacher_head.load_state_dict(self.student["head"].state_dict(), strict=False)
        self.teacher = nn.ModuleDict({"encoder": copy.deepcopy(encoder), "head": teacher_head})
        set_trainable(self.teacher, False)
        self.ibot_loss = IBOTLoss(out_dim, student_temp, center_momentum)

    def train(self, mode: bool = True) -> "OpenUSMetaArch":
        super().train(mode)
        self.teacher.eval()  # the teacher never uses drop path
        return self

    @torch.no_grad()
    def teacher_forward(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``views [N, C, H, W]`` -> class logits ``[N, K]``, patch logits ``[N, L, K]``, attention ``[N, L]``."""
        maps, scores = self.teacher["encoder"](views, return_attention=True)
        cls, patch = self.teacher["head"](VMamba.tokens_from_map(maps[-1]))
        return cls, patch, scores

    def student_forward(self, views: torch.Tensor, masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``views [N, C, H, W]``, ``masks [N, h, w]`` -> class logits, patch logits, reconstruction ``[N, C, H, W]``."""
        maps, _ = self.student["encoder"].forward_features(views, masks)
        cls, patch = self.student["head"](VMamba.tokens_from_map(maps[-1]))
        return cls, patch, self.student["reconstruction"](maps[-1])
