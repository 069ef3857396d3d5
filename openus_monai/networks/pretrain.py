"""The networks of OpenUS pretraining: student and EMA teacher (their losses and state live in
:class:`openus_monai.methods.OpenUSMethod`)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .factory import set_trainable
from .heads import IBOTHead, ReconstructionHead
from .vmamba import STRIDE, VMamba

__all__ = ["OpenUSMetaArch", "OpenUSStudent", "OpenUSTeacher", "ReconstructionStudent"]

Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class OpenUSTeacher(nn.Module):
    """EMA encoder and iBOT head (shared prototypes); always in eval mode and without gradients."""

    def __init__(self, encoder: VMamba, head: IBOTHead) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head
        set_trainable(self, False)

    def train(self, mode: bool = True) -> "OpenUSTeacher":
        return super().train(False)  # never drop path, whatever the caller asks

    @torch.no_grad()
    def forward(self, views: torch.Tensor) -> Outputs:
        """``views [N, C, H, W]`` -> class logits ``[N, K]``, patch logits ``[N, L, K]``, attention scores ``[N, L]``."""
        maps, scores = self.encoder(views, return_attention=True)
        return (*self.project(maps[-1]), scores)

    @torch.no_grad()
    def project(self, last_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last-stage map ``[N, D, h, w]`` -> class logits ``[N, K]``, patch logits ``[N, L, K]`` (the iBOT head)."""
        return self.head(VMamba.tokens_from_map(last_map))


class OpenUSStudent(nn.Module):
    """Encoder, iBOT head (separate patch prototypes) and pixel-reconstruction head.

    One forward takes both view sizes, so that DDP sees one forward per backward.
    """

    def __init__(self, encoder: VMamba, head: IBOTHead, reconstruction: ReconstructionHead) -> None:
        super().__init__()
        self.encoder, self.head, self.reconstruction = encoder, head, reconstruction

    def encode(self, views: torch.Tensor, masks: torch.Tensor | None) -> Outputs:
        """``views [N, C, H, W]``, ``masks [N, h, w]`` -> class logits, patch logits, reconstruction ``[N, C, H, W]``."""
        maps, _ = self.encoder.forward_features(views, masks)
        cls, patch = self.head(VMamba.tokens_from_map(maps[-1]))
        return cls, patch, self.reconstruction(maps[-1])

    def forward(
        self, global_views: torch.Tensor, global_masks: torch.Tensor, local_views: torch.Tensor, local_masks: torch.Tensor
    ) -> tuple[Outputs, Outputs]:
        """Outputs of :meth:`encode` for the global views and for the local views."""
        return self.encode(global_views, global_masks), self.encode(local_views, local_masks)


class ReconstructionStudent(nn.Module):
    """Encoder and pixel-reconstruction head: masked cells in, pixels out (a masked-image-modelling student)."""

    def __init__(self, encoder: VMamba, reconstruction: ReconstructionHead | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.reconstruction = reconstruction or ReconstructionHead(encoder.num_features, encoder.in_channels, STRIDE)

    def forward(self, views: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        """``views [N, C, H, W]``, ``masks [N, h, w]`` bool -> reconstruction ``[N, C, H, W]``."""
        maps, _ = self.encoder.forward_features(views, masks)
        return self.reconstruction(maps[-1])


class OpenUSMetaArch(nn.Module):
    """The networks of OpenUS: ``student`` (:class:`OpenUSStudent`) and ``teacher`` (:class:`OpenUSTeacher`,
    starting as a copy of the student, shared prototypes). The losses, their state and the teacher update are
    the pretraining method's (:class:`openus_monai.methods.OpenUSMethod`, a subclass).

    Args:
        encoder: the student's :class:`VMamba`.
        out_dim, hidden_dim, bottleneck_dim: iBOT head sizes.
    """

    def __init__(self, encoder: VMamba, out_dim: int = 8192, hidden_dim: int = 2048, bottleneck_dim: int = 256) -> None:
        super().__init__()
        width = encoder.num_features
        head = IBOTHead(width, out_dim, hidden_dim, bottleneck_dim, separate_patch_layer=True)
        self.student = OpenUSStudent(encoder, head, ReconstructionHead(width, encoder.in_channels, STRIDE))
        teacher_head = IBOTHead(width, out_dim, hidden_dim, bottleneck_dim, separate_patch_layer=False)
        teacher_head.load_state_dict(head.state_dict(), strict=False)
        self.teacher = OpenUSTeacher(copy.deepcopy(encoder), teacher_head)
