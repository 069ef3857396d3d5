"""Sequential selective scan in pure PyTorch: the exact oracle every fast path is tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .scan_inputs import ScanInputs


def discretize(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zero-order-hold discretisation shared by the pure-PyTorch backends (float32).

    Args:
        u: input ``[B, D, L]``.
        delta: step sizes before bias/softplus ``[B, D, L]``.
        A: state matrix (diagonal, negative) ``[D, N]``.
        B: input projection ``[B, G, N, L]``, G groups evenly dividing D.
        delta_bias: ``[D]`` or None.
        delta_softplus: apply softplus to ``delta + delta_bias``.

    Returns:
        ``(delta, decay, drive)``: ``delta [B, D, L]`` after bias/softplus, ``decay = exp(delta * A)``
        and ``drive = delta * B * u``, both ``[B, D, L, N]``.
    """
    batch, dim, length = u.shape
    groups, d_state = B.shape[1], B.shape[2]
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    decay = torch.exp(delta[..., None] * A.float()[None, :, None, :])
    per_group = dim // groups
    drive = (delta * u.float()).view(batch, groups, per_group, length, 1) * B.float().transpose(-1, -2)[:, :, None]
    return delta, decay, drive.reshape(batch, dim, length, d_state)


def readout(h: torch.Tensor, C: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    """``y_t = <C_t, h_t> + D * u_t``.

    Args:
        h: hidden states ``[B, D, L, N]``.
        C: output projection ``[B, G, N, L]``.
        u: input ``[B, D, L]``.
        D: skip ``[D]`` or None.

    Returns:
        ``[B, D, L]`` float32.
    """
    batch, dim, length, d_state = h.shape
    groups = C.shape[1]
    y = (h.view(batch, groups, dim // groups, length, d_state) * C.float().transpose(-1, -2)[:, :, None]).sum(-1)
    y = y.reshape(batch, dim, length)
    if D is not None:
        y = y + D.float()[:, None] * u.float()
    return y


def selective_scan_reference(inputs: ScanInputs) -> torch.Tensor:
    """``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = C_t h_t + D u_t``, one step at a time.

    Float32 accumulation; autograd differentiates through the loop (slow, exact). Inputs as
    :class:`~.scan_inputs.ScanInputs`. Returns ``[B, D, L]`` in ``u.dtype``.
    """
    u, delta, A, B, C, D, delta_bias, delta_softplus = inputs
    _, decay, drive = discretize(u, delta, A, B, delta_bias, delta_softplus)
    h = torch.zeros_like(drive[:, :, 0])
    states = []
    for t in range(u.shape[-1]):
        h = decay[:, :, t] * h + drive[:, :, t]
        states.append(h)
    return readout(torch.stack(states, dim=2), C, u, D).to(u.dtype)
