"""Fused four-direction selective scan of SS2D as Triton kernels (opt-in backend ``"triton"``).

Status: tested on the CPU under ``TRITON_INTERPRET=1`` (Triton's interpreter) against the sequential reference
scan (``tests/test_scan_triton.py``, which also compiles both kernels to sm_90 machine code without a GPU), and
once on a GPU (one NVIDIA H200, torch 2.11, triton 3.6; ``benchmarks/gpu_check.sh``, results in
``benchmarks/results/gpu_check_h200.md``): the scan's forward and every gradient within 7e-7 relative of the CPU
reference in float32 (SS2D's within 5e-6), VMamba-S 2.7-4.0x faster than the ``"torch"`` scan on the same GPU. It is not chosen automatically
(one GPU, one Triton version so far; it refuses inputs past int32 indexing rather than falling back):
``selective_scan(..., backend="triton")``, ``OPENUS_SCAN_BACKEND=triton`` or ``SS2D(scan_backend="triton")`` opt in.

:func:`triton_fused_scan` has the signature and semantics of
:func:`~openus_monai.networks.ops.scan_fused.fused_scan`: token-major, channel-last tensors, the four SS2D
directions (rows, columns, rows reversed, columns reversed) each read in its own token order, and for a
shared input ``u [B, L, D]`` the directions' outputs summed (cross scan and cross merge fused in).

Kernels (one program per (batch, direction, block of channels), the state ``[BLOCK_D, N]`` in registers,
float32 throughout):

- forward: a sequential loop over the ``L`` steps; each direction writes its own slice of a
  ``[B, L, K, D]`` buffer (summed over ``K`` in PyTorch for a shared input: no atomics), and when a
  backward will follow, the states ``[B, K, L, D, N]``.
- backward: the same loop reversed, carrying ``dL/dh``; per-token gradients go to per-direction buffers,
  and the reductions over channels (``dB``, ``dC``) and over batches (``dA``, ``dD``, ``d delta_bias``)
  are per-program partial sums added up in PyTorch.

Triton is an optional dependency (``pip install triton``); without it this module imports and
:func:`triton_fused_scan` raises. Triton is imported on first use, not with this module: it decides when it
is first imported whether its own library (``tl.sum`` and the like) is interpreted, and when a kernel is
decorated whether that kernel is, so ``TRITON_INTERPRET=1`` set after importing ``openus_monai`` (a test
module's first lines, in a session whose earlier modules imported it) still takes effect.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from monai.utils import optional_import

from .cross_scan import direction_orders
from .scan_fused import fused_scan_operands, low_rank_delta, scan_token_major
from .scan_inputs import ScanInputs


def _found(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: in sys.modules as None (import blocked)
        return False


HAS_TRITON = _found("triton")
triton = tl = None  # the modules, once _compiled() has imported them (the kernels' bodies name ``tl``)

__all__ = ["HAS_TRITON", "selective_scan_triton", "triton_fused_scan", "triton_scan_error"]

MAX_BLOCK_D = 64  # channels per program


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_scan_error(device: torch.device | str | None = None) -> str | None:
    """Why the Triton scan cannot run (on ``device``), or None."""
    if not HAS_TRITON:
        return "the 'triton' package is not installed (pip install triton)"
    if device is not None and torch.device(device).type != "cuda" and not _interpreting():
        return "its Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 to run them in Triton's interpreter on the CPU)"
    return None


def _scan_fwd_kernel(
    order_ptr, u_ptr, dt_ptr, bias_ptr, a_ptr, b_ptr, c_ptr, skip_ptr, y_ptr, hs_ptr,
    u_sb, u_st, u_sk, length, n_dir, dim, d_state,
    SOFTPLUS: tl.constexpr, SAVE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Forward over one (batch, direction, channel block): ``y [B, L, K, D]`` and the states ``hs [B, K, L, D, N]``.

    Step ``t`` of direction ``k`` reads token ``order[k, t]`` (``order [K, L]``). ``u`` is read through the
    strides (``u_sk = 0`` when the directions share it); ``dt``, ``B``, ``C`` are ``[B, L, K, *]``,
    ``A [K, D, N]``, ``bias``, ``skip`` ``[K, D]``.
    """
    pid = tl.program_id(0)  # batch * n_dir + direction
    b, k = pid // n_dir, pid % n_dir
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d, mask_n = offs_d < dim, offs_n < d_state
    mask_dn = mask_d[:, None] & mask_n[None, :]
    a = tl.load(a_ptr + (k * dim + offs_d[:, None]) * d_state + offs_n[None, :], mask=mask_dn, other=0.0)
    bias = tl.load(bias_ptr + k * dim + offs_d, mask=mask_d, other=0.0)
    skip = tl.load(skip_ptr + k * dim + offs_d, mask=mask_d, other=0.0)
    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for t in range(0, length):
        tok = tl.load(order_ptr + k * length + t)
        row = (b * length + tok) * n_dir + k  # (b, tok, k) of the [B, L, K, *] tensors
        u = tl.load(u_ptr + b * u_sb + tok * u_st + k * u_sk + offs_d, mask=mask_d, other=0.0)
        x = tl.load(dt_ptr + row * dim + offs_d, mask=mask_d, other=0.0) + bias
        if SOFTPLUS:  # max(x, 0) + log1p(exp(-|x|)), log1p(z) = log(w) z / (w - 1) with w = 1 + z (exact to rounding)
            z = tl.exp(-tl.abs(x))
            w = 1.0 + z
            x = tl.maximum(x, 0.0) + tl.where(w == 1.0, z, tl.log(w) * z / tl.where(w == 1.0, 1.0, w - 1.0))
        bt = tl.load(b_ptr + row * d_state + offs_n, mask=mask_n, other=0.0)
        ct = tl.load(c_ptr + row * d_state + offs_n, mask=mask_n, other=0.0)
        h = tl.exp(x[:, None] * a) * h + (x * u)[:, None] * bt[None, :]
        y = tl.sum(h * ct[None, :], axis=1) + skip * u
        tl.store(y_ptr + row * dim + offs_d, y, mask=mask_d)
        if SAVE:
            tl.store(hs_ptr + ((pid * length + t) * dim + offs_d[:, None]) * d_state + offs_n[None, :], h, mask=mask_dn)


def _scan_bwd_kernel(
    order_ptr, u_ptr, dt_ptr, bias_ptr, a_ptr, b_ptr, c_ptr, skip_ptr, hs_ptr, gy_ptr,
    gu_ptr, gdt_ptr, ga_ptr, gb_ptr, gc_ptr, gskip_ptr, gbias_ptr,
    u_sb, u_st, u_sk, length, n_dir, dim, d_state,
    SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Backward over one (batch, direction, channel block), steps in reverse with ``g = dL/dh_t`` carried.

    Writes ``gu``, ``gdt`` ``[B, L, K, D]`` (this program's cells only); ``gb``, ``gc``
    ``[D blocks, B * L * K, N]`` (this block's partial sums over its channels);
    ``ga [B, K, D, N]``, ``gskip``, ``gbias`` ``[B, K, D]`` (sums over this program's steps).
    """
    pid = tl.program_id(0)
    block = tl.program_id(1)
    b, k = pid // n_dir, pid % n_dir
    offs_d = block * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d, mask_n = offs_d < dim, offs_n < d_state
    mask_dn = mask_d[:, None] & mask_n[None, :]
    rows = tl.num_programs(0) * length  # B * L * K
    state = offs_d[:, None] * d_state + offs_n[None, :]
    a = tl.load(a_ptr + k * dim * d_state + state, mask=mask_dn, other=0.0)
    bias = tl.load(bias_ptr + k * dim + offs_d, mask=mask_d, other=0.0)
    skip = tl.load(skip_ptr + k * dim + offs_d, mask=mask_d, other=0.0)
    carry = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)  # dL/dh_t through h_{t+1}
    ga = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    gskip = tl.zeros([BLOCK_D], dtype=tl.float32)
    gbias = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(0, length):
        t = length - 1 - i
        tok = tl.load(order_ptr + k * length + t)
        row = (b * length + tok) * n_dir + k
        u_at = b * u_sb + tok * u_st + k * u_sk + offs_d
        u = tl.load(u_ptr + u_at, mask=mask_d, other=0.0)
        gy = tl.load(gy_ptr + u_at, mask=mask_d, other=0.0)
        raw = tl.load(dt_ptr + row * dim + offs_d, mask=mask_d, other=0.0) + bias
        delta = raw
        slope = tl.full([BLOCK_D], 1.0, tl.float32)  # d delta / d raw
        if SOFTPLUS:
            z = tl.exp(-tl.abs(raw))
            w = 1.0 + z
            delta = tl.maximum(raw, 0.0) + tl.where(w == 1.0, z, tl.log(w) * z / tl.where(w == 1.0, 1.0, w - 1.0))
            slope = tl.where(raw >= 0.0, 1.0, z) / w  # sigmoid(raw)
        bt = tl.load(b_ptr + row * d_state + offs_n, mask=mask_n, other=0.0)
        ct = tl.load(c_ptr + row * d_state + offs_n, mask=mask_n, other=0.0)
        decay = tl.exp(delta[:, None] * a)
        h = tl.load(hs_ptr + (pid * length + t) * dim * d_state + state, mask=mask_dn, other=0.0)
        h_prev = tl.load(hs_ptr + (pid * length + t - 1) * dim * d_state + state, mask=mask_dn & (t > 0), other=0.0)
        g = carry + gy[:, None] * ct[None, :]  # dL/dh_t
        g_decay = g * h_prev * decay  # dL/d(delta A) through the decay
        g_drive = tl.sum(g * bt[None, :], axis=1)  # dL/d(delta u)
        g_delta = tl.sum(g_decay * a, axis=1) + g_drive * u
        ga += g_decay * delta[:, None]
        carry = g * decay
        g_raw = g_delta * slope
        gskip += gy * u
        gbias += g_raw
        tl.store(gu_ptr + row * dim + offs_d, skip * gy + g_drive * delta, mask=mask_d)
        tl.store(gdt_ptr + row * dim + offs_d, g_raw, mask=mask_d)
        partial = (block * rows + row) * d_state + offs_n
        tl.store(gb_ptr + partial, tl.sum(g * (delta * u)[:, None], axis=0), mask=mask_n)
        tl.store(gc_ptr + partial, tl.sum(gy[:, None] * h, axis=0), mask=mask_n)
    tl.store(ga_ptr + pid * dim * d_state + state, ga, mask=mask_dn)
    tl.store(gskip_ptr + pid * dim + offs_d, gskip, mask=mask_d)
    tl.store(gbias_ptr + pid * dim + offs_d, gbias, mask=mask_d)


_kernels: dict[bool, tuple] = {}


def _compiled() -> tuple:
    """The (forward, backward) kernels, decorated for the current ``TRITON_INTERPRET`` mode, importing Triton
    on the first call.

    Raises:
        RuntimeError: ``TRITON_INTERPRET=1`` now, but Triton was imported (by anything) before it was set.
    """
    global triton, tl
    if triton is None:
        triton, _ = optional_import("triton")
        tl, _ = optional_import("triton.language")
    mode = _interpreting()
    if mode and isinstance(tl.standard.sum, triton.runtime.jit.JITFunction):
        raise RuntimeError("TRITON_INTERPRET=1 was set after triton was imported: set it before anything imports triton")
    if mode not in _kernels:
        _kernels[mode] = triton.jit(_scan_fwd_kernel), triton.jit(_scan_bwd_kernel)
    return _kernels[mode]


def _orders(n_dir: int, height: int, width: int, cross: bool, device: torch.device) -> torch.Tensor:
    """Token read at each step, per direction: ``[K, L]`` int32 (SS2D's four orders, or token order)."""
    if cross:
        return direction_orders(height, width, device).to(torch.int32).contiguous()
    return torch.arange(height * width, device=device, dtype=torch.int32).expand(n_dir, -1).contiguous()


def _blocks(dim: int, d_state: int) -> tuple[int, int, int]:
    """``(BLOCK_D, BLOCK_N, number of channel blocks)`` (Triton blocks are powers of two)."""
    block_d = min(MAX_BLOCK_D, 1 << (dim - 1).bit_length())
    return block_d, 1 << (d_state - 1).bit_length(), -(-dim // block_d)


def _u_strides(u: torch.Tensor) -> tuple[int, int, int]:
    """(batch, token, direction) strides of a contiguous ``u``: ``[B, L, D]`` is read by every direction."""
    return (u.stride(0), u.stride(1), 0) if u.dim() == 3 else (u.stride(0), u.stride(1), u.stride(2))


def _forward(u, dt, bias, A, B, C, D, softplus: bool, height: int, width: int, cross: bool, save: bool):
    """Run the forward kernel on float32 contiguous tensors (shapes as :func:`triton_fused_scan`).

    Returns:
        ``y`` shaped like ``u``, and the states ``[B, K, L, D, N]`` (empty unless ``save``).
    """
    batch, length, n_dir, dim = dt.shape
    d_state = A.shape[-1]
    block_d, block_n, n_blocks = _blocks(dim, d_state)
    ys = u.new_empty(batch, length, n_dir, dim)
    hs = u.new_empty(batch, n_dir, length, dim, d_state) if save else u.new_empty(1)
    _compiled()[0][(batch * n_dir, n_blocks)](
        _orders(n_dir, height, width, cross, u.device), u, dt, bias, A, B, C, D, ys, hs, *_u_strides(u), length, n_dir, dim, d_state,
        SOFTPLUS=softplus, SAVE=save, BLOCK_D=block_d, BLOCK_N=block_n,
    )
    return (ys.sum(2) if u.dim() == 3 else ys), hs


def _backward(u, dt, bias, A, B, C, D, hs, gy, softplus: bool, height: int, width: int, cross: bool):
    """Run the backward kernel; returns the gradients of ``u, dt, bias, A, B, C, D``, shaped like them."""
    batch, length, n_dir, dim = dt.shape
    d_state = A.shape[-1]
    block_d, block_n, n_blocks = _blocks(dim, d_state)
    gu, gdt = torch.empty_like(dt), torch.empty_like(dt)  # gu per direction, [B, L, K, D]
    gA = u.new_empty(batch, n_dir, dim, d_state)
    gD, gbias = u.new_empty(batch, n_dir, dim), u.new_empty(batch, n_dir, dim)
    gB, gC = (u.new_empty(n_blocks, *B.shape) for _ in range(2))
    _compiled()[1][(batch * n_dir, n_blocks)](
        _orders(n_dir, height, width, cross, u.device), u, dt, bias, A, B, C, D, hs, gy.contiguous(),
        gu, gdt, gA, gB, gC, gD, gbias, *_u_strides(u), length, n_dir, dim, d_state,
        SOFTPLUS=softplus, BLOCK_D=block_d, BLOCK_N=block_n,
    )
    return (gu.sum(2) if u.dim() == 3 else gu), gdt, gbias.sum(0), gA.sum(0), gB.sum(0), gC.sum(0), gD.sum(0)


class _TritonScan(torch.autograd.Function):
    """Autograd around the two kernels; inputs float32 contiguous, ``bias`` and ``D`` never None."""

    @staticmethod
    def forward(ctx, u, dt, bias, A, B, C, D, softplus, height, width, cross):
        save = any(ctx.needs_input_grad[:7])
        y, hs = _forward(u, dt, bias, A, B, C, D, softplus, height, width, cross, save)
        ctx.save_for_backward(u, dt, bias, A, B, C, D, hs)
        ctx.meta = softplus, height, width, cross
        return y

    @staticmethod
    def backward(ctx, gy):
        grads = _backward(*ctx.saved_tensors, gy, *ctx.meta)
        return (*grads, None, None, None, None)


def triton_fused_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    height: int,
    width: int,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    cross: bool = True,
    delta_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`~openus_monai.networks.ops.scan_fused.fused_scan` on Triton kernels (same arguments, same result).

    Args:
        u: ``[B, L, D]`` shared by the ``K`` directions (outputs summed over them) or ``[B, L, K, D]``.
        delta: ``[B, L, K, D]`` step sizes (before ``delta_bias`` and softplus), or ``[B, L, K, R]`` with ``delta_weight``.
        A: ``[K, D, N]``.
        B, C: ``[B, L, K, N]``.
        D: ``[K, D]`` skip or None.
        height, width: the token grid, ``L = height * width``.
        delta_bias: ``[K, D]`` or None.
        delta_softplus: apply softplus to ``delta + delta_bias`` (inside the kernel).
        cross: SS2D's four directions (``K == 4``); if False every direction scans in token order.
        delta_weight: ``[K, D, R]`` projecting a low-rank ``delta`` (expanded before the kernels here).

    Returns:
        ``[B, L, D]`` (shared ``u``) or ``[B, L, K, D]``, in ``u.dtype``.

    Raises:
        RuntimeError: triton is missing, or the tensors are not on CUDA and ``TRITON_INTERPRET`` is not 1.
        ValueError: as :func:`~openus_monai.networks.ops.scan_fused.fused_scan`, or ``B * L * K * D * N >= 2**31``.
    """
    error = triton_scan_error(u.device)
    if error:
        raise RuntimeError(f"the Triton selective scan cannot run: {error}")
    delta = low_rank_delta(delta, delta_weight)
    if delta.numel() * A.shape[-1] >= 2**31:  # the saved states [B, K, L, D, N], indexed in int32 by the kernels
        raise ValueError(f"the Triton selective scan indexes in int32: {tuple(delta.shape)} x d_state {A.shape[-1]} is too large")
    operands = fused_scan_operands(u, delta, A, B, C, D, height, width, delta_bias, cross)
    if torch.is_grad_enabled():
        y = _TritonScan.apply(*operands, bool(delta_softplus), height, width, bool(cross))
    else:  # inference: no autograd node, whose needs_input_grad would still ask to save every state
        y, _ = _forward(*operands, bool(delta_softplus), height, width, bool(cross), False)
    return y.to(u.dtype)


def selective_scan_triton(inputs: ScanInputs) -> torch.Tensor:
    """:func:`~openus_monai.networks.selective_scan`'s contract (``[B, D, L]`` layout) on the Triton kernels.

    Each of the ``G`` groups of channels is one direction scanned in token order (``cross=False``).
    """
    return scan_token_major(inputs, triton_fused_scan)
