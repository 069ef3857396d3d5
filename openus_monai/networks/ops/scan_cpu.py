"""Fast pure-PyTorch selective scan (CPU, and any device without a compiled kernel).

Design, chosen by measurement (``benchmarks/bench_scan.py``): everything that is elementwise over the
sequence (discretisation, read-out) is vectorised and differentiated by autograd; only the linear
recurrence ``h_t = a_t * h_{t-1} + b_t`` is a custom autograd function, computed without autograd
and differentiated by hand: its backward is the same recurrence run in reverse,
``g_t = dL/dh_t + a_{t+1} g_{t+1}``.

The recurrence runs in two levels to cut Python steps from ``L`` to about ``2 sqrt(L)``: the sequence
is cut into chunks of ``T`` steps, all chunks are scanned side by side from a zero state while the
running decay products ``P_t = a_1 ... a_t`` are kept, the chunk-final states are carried across
chunks, and each chunk adds ``P_t * carry`` in one vectorised step. Only products of decays in
``[0, 1]`` occur: nothing divides by a decay (that form overflows for long sequences).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .scan_inputs import ScanInputs


__all__ = ["linear_recurrence", "selective_scan_cpu"]


def _scan(a: torch.Tensor, b: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """``h_t = a_t * h_{t-1} + b_t`` (``reverse``: ``h_t = a_t * h_{t+1} + b_t``) along dim 0 of contiguous
    ``[L, M]`` tensors, without autograd."""
    # int(): a constant under torch.jit.trace too, so that a traced model (whose loops below are unrolled for
    # this length) fails at another length in the view below instead of skipping carry steps
    length = int(a.shape[0])
    chunk = max(1, math.isqrt(length))
    n_chunks = -(-length // chunk)
    pad = n_chunks * chunk - length
    if pad:  # padded steps go where the scan ends, so they never influence real ones
        spec = (0, 0, pad, 0) if reverse else (0, 0, 0, pad)
        a, b = F.pad(a, spec), F.pad(b, spec)
    a = a.view(n_chunks, chunk, a.shape[1])
    h = b.reshape(n_chunks, chunk, b.shape[1]).clone()
    decay = a.clone()  # running products of the decays within each chunk, in scan order
    prev = 1 if reverse else -1  # offset of the previous step in scan order
    for t in range(chunk - 2, -1, -1) if reverse else range(1, chunk):
        h[:, t].addcmul_(a[:, t], h[:, t + prev])
        decay[:, t].mul_(decay[:, t + prev])
    if n_chunks > 1:
        last = 0 if reverse else -1  # each chunk's final step in scan order
        carry = h[:, last].clone()  # true final state of each chunk, once carried
        for c in range(n_chunks - 2, -1, -1) if reverse else range(1, n_chunks):
            carry[c].addcmul_(decay[c, last], carry[c + prev])
        if reverse:
            h[:-1].addcmul_(decay[:-1], carry[1:, None])
        else:
            h[1:].addcmul_(decay[1:], carry[:-1, None])
    h = h.view(n_chunks * chunk, -1)
    return h[pad:] if reverse else h[:length]


class _LinearRecurrence(torch.autograd.Function):
    """``h_t = a_t * h_{t-1} + b_t`` along dim 0 with ``h_{-1} = 0``; ``a``, ``b``: ``[L, ...]``."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        shape = b.shape
        a, b = a.reshape(shape[0], -1).contiguous(), b.reshape(shape[0], -1).contiguous()
        h = _scan(a, b)
        ctx.save_for_backward(a, h)
        return h.view(shape)

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, h = ctx.saved_tensors
        shape = grad_h.shape
        g = grad_h.reshape(a.shape)
        # dL/dh: G_t = g_t + a_{t+1} G_{t+1}. With P_t = a_t G_t this is the reverse scan
        # P_t = a_t g_t + a_t P_{t+1}, and G_t = g_t + P_{t+1}: no shifted or flipped copies needed.
        p = _scan(a, a * g, reverse=True)
        grad_b = g.clone()
        grad_b[:-1] += p[1:]
        grad_a = torch.empty_like(a)
        grad_a[0].zero_()
        torch.mul(grad_b[1:], h[:-1], out=grad_a[1:])
        return grad_a.view(shape), grad_b.view(shape)


def linear_recurrence(a: torch.Tensor, b: torch.Tensor, dim: int = 0, reverse: bool = False) -> torch.Tensor:
    """Solve ``h_t = a_t * h_{t-1} + b_t`` (``h_t = a_t * h_{t+1} + b_t`` if ``reverse``) along ``dim``.

    Args:
        a: decays, broadcast-compatible with ``b``; values in ``[0, 1]`` keep it stable.
        b: drives.
        dim: the sequence dimension.
        reverse: run from the end of the sequence to its start.

    Returns:
        ``h`` with the shape of ``b``; differentiable in ``a`` and ``b``.
    """
    a, b = torch.broadcast_tensors(a, b)
    a, b = a.movedim(dim, 0), b.movedim(dim, 0)
    if reverse:
        a, b = a.flip(0), b.flip(0)
    h = _LinearRecurrence.apply(a, b)
    if reverse:
        h = h.flip(0)
    return h.movedim(0, dim)


def selective_scan_cpu(inputs: ScanInputs) -> torch.Tensor:
    """Selective scan with the chunked recurrence and its hand-written reverse-scan backward.

    Same contract and numbers as :func:`selective_scan_reference` (float32 accumulation). Works in a
    sequence-major layout ``[L, B, G, D/G, N]`` so that every elementwise step and every recurrence step
    reads contiguous memory; inputs are transposed once on the way in and the output once on the way out.
    """
    u, delta, A, B, C, D, delta_bias, delta_softplus = inputs
    batch, dim, length = u.shape
    groups, d_state = B.shape[1], B.shape[2]
    per_group = dim // groups

    def seq_major(x: torch.Tensor) -> torch.Tensor:  # [B, D, L] -> [L, B, G, D/G, 1]
        return x.float().permute(2, 0, 1).contiguous().view(length, batch, groups, per_group, 1)

    u_t, delta_t = seq_major(u), seq_major(delta)
    if delta_bias is not None:
        delta_t = delta_t + delta_bias.float().view(groups, per_group, 1)
    if delta_softplus:
        delta_t = F.softplus(delta_t)
    b_t = B.float().permute(3, 0, 1, 2).contiguous()[:, :, :, None]  # [L, B, G, 1, N]
    c_t = C.float().permute(3, 0, 1, 2).contiguous()[:, :, :, None]
    decay = torch.exp(delta_t * A.float().view(groups, per_group, d_state))  # [L, B, G, D/G, N]
    drive = (delta_t * u_t) * b_t
    if torch.is_grad_enabled() and (decay.requires_grad or drive.requires_grad):
        h = _LinearRecurrence.apply(decay, drive)
    else:  # no graph needed (inference, torch.jit.trace for export): the same scan without a Python autograd Function
        h = _scan(decay.reshape(length, -1).contiguous(), drive.reshape(length, -1).contiguous()).view(drive.shape)
    y = h.squeeze(-1) * c_t.squeeze(-1) if d_state == 1 else (h * c_t).sum(-1)  # [L, B, G, D/G]
    if D is not None:
        y = y + D.float().view(groups, per_group) * u_t.squeeze(-1)
    return y.reshape(length, batch, dim).permute(1, 2, 0).contiguous().to(u.dtype)
