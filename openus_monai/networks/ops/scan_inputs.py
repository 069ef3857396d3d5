"""The selective scan's contract, written once: its inputs (:class:`ScanInputs`) and a backend's type (:data:`ScanBackend`).

Every backend (``reference``, ``torch``, ``fused_cpu``, ``mamba_ssm``) is a :data:`ScanBackend` registered in
:data:`~openus_monai.networks.ops.selective_scan.SCAN_BACKENDS`; the public entry point
:func:`~openus_monai.networks.selective_scan` packs its arguments into one :class:`ScanInputs` and dispatches.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

__all__ = ["ScanBackend", "ScanInputs"]


class ScanInputs(NamedTuple):
    """Inputs of the selective scan (Mamba S6): ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``,
    ``y_t = C_t h_t + D u_t``, for ``B`` sequences of ``D`` channels and length ``L``.

    Attributes:
        u: input ``[B, D, L]``.
        delta: step sizes ``[B, D, L]`` (before ``delta_bias`` and softplus).
        A: diagonal state matrix ``[D, N]`` (negative for a stable system).
        B: input projection ``[B, G, N, L]``; channel ``d`` uses group ``d // (D // G)``.
        C: output projection ``[B, G, N, L]``.
        D: skip connection ``[D]`` or None.
        delta_bias: ``[D]`` added to ``delta`` or None.
        delta_softplus: apply softplus to ``delta + delta_bias``.
    """

    u: torch.Tensor
    delta: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor | None = None
    delta_bias: torch.Tensor | None = None
    delta_softplus: bool = False


#: a selective-scan backend: :class:`ScanInputs` -> ``y [B, D, L]`` in ``u.dtype`` (accumulated in float32)
ScanBackend = Callable[[ScanInputs], torch.Tensor]
