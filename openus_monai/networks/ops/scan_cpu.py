"""Fast pure-PyTorch selective scan (CPU, and any device without a compiled kernel).

Design, chosen by measurement (``benchmarks/bench_scan.py``): everything that is elementwise over the
sequence (discretisation, read-out) is vectorised and differentiated by autograd; only the linear
recurrence ``h_t = a_t * h_{t-1} + b_t`` is a custom autograd function. Its forward is one in-place
``addcmul`` per step with autograd off, and its backward is the same recurrence run in reverse,
``g_t = dL/dh_t + a_{t+1} g_{t+1}``. Only multiplications by decays in ``[0, 1]`` occur: nothing
divides by a decay (which overflows for long sequences), and nothing is exponentiated outside
``exp(delta * A) <= 1``.
"""

from __future__ import annotations

import torch

from .scan_reference import discretize, readout

__all__ = ["linear_recurrence", "selective_scan_cpu"]


class _LinearRecurrence(torch.autograd.Function):
    """``h_t = a_t * h_{t-1} + b_t`` along dim 0 with ``h_{-1} = 0``; ``a``, ``b``: ``[L, ...]``."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = a.contiguous()
        h = b.clone(memory_format=torch.contiguous_format)
        for t in range(1, h.shape[0]):
            h[t].addcmul_(a[t], h[t - 1])
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, h = ctx.saved_tensors
        g = grad_h.clone(memory_format=torch.contiguous_format)
        for t in range(g.shape[0] - 2, -1, -1):
            g[t].addcmul_(a[t + 1], g[t + 1])
        grad_a = torch.zeros_like(a)
        torch.mul(g[1:], h[:-1], out=grad_a[1:])
        return grad_a, g


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


def selective_scan_cpu(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """Selective scan with the sequential-forward / reverse-scan-backward recurrence.

    Same contract and numbers as :func:`selective_scan_reference` (float32 accumulation).
    """
    _, decay, drive = discretize(u, delta, A, B, delta_bias, delta_softplus)
    h = linear_recurrence(decay, drive, dim=2)
    return readout(h, C, u, D).to(u.dtype)
