"""Fused CPU selective scan: a small C kernel (``csrc/fused_scan.c``) compiled on first use.

The pure-PyTorch path (:mod:`.scan_cpu`) spends most of its time moving memory: every elementwise step of
the discretisation is a pass over ``[L, B, K*D]`` tensors, plus the transposes into sequence-major order
and the four-direction cross scan and merge. The kernel does the whole scan of one SS2D (all four
directions, discretisation, recurrence, read-out, skip and cross merge) in one pass over token-major,
channel-last tensors, reading each direction's tokens in its own order, and its backward in one reverse
pass. Channels are the contiguous, vectorised dimension; threads split (batch, channel) ranges.

The kernel is plain C99 with no PyTorch headers: it is compiled with the system C compiler (``$CC``, else
``cc``) into ``$OPENUS_KERNEL_CACHE`` (default ``~/.cache/openus_monai``) in about a second, loaded with
:mod:`ctypes`, and reused by later processes. Without a compiler the backend is simply unavailable and the
pure-PyTorch path is used. Nothing is downloaded.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from .scan_cpu import selective_scan_cpu
from .scan_inputs import ScanInputs

__all__ = ["MAX_STATE", "fused_scan", "fused_scan_available", "fused_scan_error", "selective_scan_fused_cpu"]

logger = logging.getLogger(__name__)

MAX_STATE = 16  # d_state bound of the kernel's on-stack state (csrc/fused_scan.c MAX_STATE)
SOURCE = Path(__file__).with_name("csrc") / "fused_scan.c"
_BASE_FLAGS = ["-O3", "-std=c99", "-fPIC", "-shared"]
_VECTOR_FLAGS = ["-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math"]
# Tried in order. The library is built for (and cached under a key of) this machine's CPU.
FLAG_SETS = (_BASE_FLAGS + _VECTOR_FLAGS + ["-march=native"], _BASE_FLAGS + _VECTOR_FLAGS, _BASE_FLAGS)

_lock = threading.Lock()
_state: dict = {}


def _forget_pool() -> None:
    # a forked child inherits the pool object but not its threads: it must make its own
    _state.pop("pool", None)
    _state.pop("pool_size", None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _cache_dir() -> Path:
    root = os.environ.get("OPENUS_KERNEL_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "openus_monai"


def _cpu_fingerprint() -> str:
    """What the library was built for: the machine, and on Linux the CPU model and feature flags."""
    text = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            text += "".join(sorted({line for line in f if line.startswith(("model name", "flags", "Features"))}))
    except OSError:
        text += platform.processor()
    return text


def _compile(source: bytes) -> Path:
    """Compile the kernel into the cache (atomically) and return the shared library's path."""
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C compiler: {compiler!r} is not on PATH (set CC)")
    fingerprint = _cpu_fingerprint()
    targets = []
    for flags in FLAG_SETS:
        key = hashlib.sha256(source + " ".join([compiler, *flags, fingerprint]).encode()).hexdigest()[:16]
        targets.append((flags, _cache_dir() / f"fused_scan-{key}.so"))
    for _, target in targets:  # any earlier build, before trying a compile that failed last time
        if target.is_file():
            return target
    errors = []
    for flags, target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            src, out = Path(tmp) / "fused_scan.c", Path(tmp) / "fused_scan.so"
            src.write_bytes(source)
            proc = subprocess.run([compiler, *flags, "-o", str(out), str(src), "-lm"], capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                os.replace(out, target)  # atomic: concurrent processes never load a half-written library
                return target
            errors.append(f"{compiler} {' '.join(flags)}: {proc.stderr.strip()[-500:]}")
    raise RuntimeError("compiling the fused scan kernel failed:\n" + "\n".join(errors))


def _library() -> ctypes.CDLL | None:
    """The loaded kernel, compiling it on first use; None (with the reason in :func:`fused_scan_error`) if it cannot be built."""
    with _lock:
        if "lib" not in _state:
            try:
                lib = ctypes.CDLL(str(_compile(SOURCE.read_bytes())))
                i64, ptr = ctypes.c_int64, ctypes.c_void_p
                flag = ctypes.c_int
                lib.openus_scan_fwd.argtypes = [ptr, i64, i64, i64, ptr, ptr, flag] + [ptr] * 6 + [i64] * 5 + [flag] + [i64] * 4
                lib.openus_scan_bwd.argtypes = [ptr, i64, i64, i64, ptr, ptr, flag] + [ptr] * 13 + [i64] * 5 + [flag] + [i64] * 4
                lib.openus_scan_fwd.restype = lib.openus_scan_bwd.restype = None
                _state["lib"], _state["error"] = lib, None
            except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                _state["lib"], _state["error"] = None, str(err)
                logger.info("fused CPU selective scan unavailable, using the pure-PyTorch scan: %s", err)
        return _state["lib"]


def fused_scan_available() -> bool:
    """Whether the fused CPU kernel is built (building it now if needed)."""
    return _library() is not None


def fused_scan_error() -> str | None:
    """Why the fused kernel is unavailable, or None."""
    _library()
    return _state.get("error")


def _tasks(batch: int, dim: int) -> list[tuple[int, int, int, int]]:
    """Split (batch, channel) ranges over ``torch.get_num_threads()`` workers; channel splits are multiples of 16."""
    threads = max(1, torch.get_num_threads())
    if threads == 1:
        return [(0, batch, 0, dim)]
    if batch >= threads:
        edges = [round(i * batch / threads) for i in range(threads + 1)]
        return [(lo, hi, 0, dim) for lo, hi in zip(edges, edges[1:]) if hi > lo]
    parts = -(-threads // batch)
    step = max(16, (-(-dim // parts) + 15) // 16 * 16)
    return [(b, b + 1, lo, min(lo + step, dim)) for b in range(batch) for lo in range(0, dim, step)]


def _run(fn, tasks: list, make_args) -> None:
    if len(tasks) == 1:
        fn(*make_args(0, tasks[0]))
        return
    if _state.get("pool") is None or _state.get("pool_size", 0) < len(tasks):
        _state["pool"], _state["pool_size"] = ThreadPoolExecutor(len(tasks), thread_name_prefix="openus-scan"), len(tasks)
    # ctypes releases the GIL during the call, so the tasks run in parallel
    list(_state["pool"].map(lambda it: fn(*make_args(*it)), enumerate(tasks)))


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class _FusedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, dt, bias, A, B, C, D, softplus: bool, height: int, width: int, order: int):
        lib = _library()
        batch, length, k, dim = dt.shape
        n = A.shape[-1]
        u32 = u.float().contiguous()
        shared = u32.dim() == 3  # one input for all K directions, summed output (SS2D)
        ustrides = (length * dim, dim, 0) if shared else (length * k * dim, k * dim, dim)
        dt32, B32, C32 = (t.float().contiguous() for t in (dt, B, C))
        bias32 = u32.new_zeros(k, dim) if bias is None else bias.float().contiguous()
        A32 = A.float().transpose(1, 2).contiguous()  # [K, N, D]: channels contiguous
        D32 = u32.new_zeros(k, dim) if D is None else D.float().contiguous()  # the kernel always reads a skip
        y = torch.zeros_like(u32)
        hs = u32.new_empty(batch, k, length, n, dim) if any(ctx.needs_input_grad) else None
        _run(
            lib.openus_scan_fwd,
            _tasks(batch, dim),
            lambda i, t: (
                _ptr(u32), *ustrides, _ptr(dt32), _ptr(bias32), int(softplus), _ptr(A32), _ptr(B32), _ptr(C32), _ptr(D32),
                _ptr(y), _ptr(hs), k, dim, n, height, width, order, *t,
            ),
        )
        ctx.save_for_backward(u32, dt32, bias32, A32, B32, C32, D32, hs)
        ctx.meta = (softplus, height, width, order, ustrides, u.dtype)
        return y.to(u.dtype)

    @staticmethod
    def backward(ctx, gy):
        lib = _library()
        u32, dt32, bias32, A32, B32, C32, D32, hs = ctx.saved_tensors
        softplus, height, width, order, ustrides, dtype = ctx.meta
        batch, length, k, dim = dt32.shape
        n = A32.shape[1]
        gy32 = gy.float().contiguous()
        tasks = _tasks(batch, dim)
        gu, gdt = torch.zeros_like(u32), torch.empty_like(dt32)
        gA = u32.new_zeros(batch, k, n, dim)
        gD, gbias = u32.new_zeros(batch, k, dim), u32.new_zeros(batch, k, dim)
        gB, gC = (u32.new_zeros(len(tasks), *B32.shape) for _ in range(2))  # one copy per task: no races
        _run(
            lib.openus_scan_bwd,
            tasks,
            lambda i, t: (
                _ptr(u32), *ustrides, _ptr(dt32), _ptr(bias32), int(softplus), _ptr(A32), _ptr(B32), _ptr(C32), _ptr(D32),
                _ptr(hs), _ptr(gy32), _ptr(gu), _ptr(gdt), _ptr(gA), _ptr(gB[i]), _ptr(gC[i]), _ptr(gD), _ptr(gbias),
                k, dim, n, height, width, order, *t,
            ),
        )
        needs = ctx.needs_input_grad
        return (
            gu.to(dtype),
            gdt,
            gbias.sum(0) if needs[2] else None,
            gA.sum(0).transpose(1, 2),
            gB.sum(0),
            gC.sum(0),
            gD.sum(0) if needs[6] else None,
            None,
            None,
            None,
            None,
        )


def fused_scan(
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
) -> torch.Tensor:
    """K-direction selective scan over token-major, channel-last tensors (float32 accumulation).

    ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = C_t h_t + D u_t`` along each direction's
    order of the ``height x width`` tokens.

    Args:
        u: ``[B, L, D]`` one input read by all ``K`` directions (SS2D: the outputs are summed over the
            directions, i.e. cross scan and cross merge are fused in), or ``[B, L, K, D]`` one per direction.
        delta: ``[B, L, K, D]`` step sizes (before ``delta_bias`` and softplus).
        A: ``[K, D, N]`` (negative), ``N <= 16``.
        B, C: ``[B, L, K, N]``.
        D: ``[K, D]`` skip or None.
        height, width: the token grid, ``L = height * width``.
        delta_bias: ``[K, D]`` added to ``delta`` or None.
        delta_softplus: apply softplus to ``delta + delta_bias`` (inside the kernel).
        cross: directions are SS2D's (rows, columns, rows reversed, columns reversed; ``K == 4``); if
            False every direction scans tokens in index order.

    Returns:
        ``[B, L, D]`` (shared ``u``) or ``[B, L, K, D]``, in ``u.dtype``.
    """
    if _library() is None:
        raise RuntimeError(f"the fused CPU selective scan is unavailable: {fused_scan_error()}")
    if A.shape[-1] > MAX_STATE:
        raise ValueError(f"the fused CPU selective scan supports d_state <= {MAX_STATE}, got {A.shape[-1]}")
    if cross and delta.shape[2] != 4:
        raise ValueError(f"cross=True needs 4 directions, got delta {tuple(delta.shape)}")
    if delta.shape[1] != height * width:
        raise ValueError(f"delta has {delta.shape[1]} positions, the grid {height} x {width} has {height * width}")
    if any(t.device.type != "cpu" for t in (u, delta, A, B, C)):
        raise RuntimeError("the fused CPU selective scan runs on CPU tensors only")
    return _FusedScan.apply(u, delta, delta_bias, A, B, C, D, delta_softplus, height, width, 0 if cross else 1)


def selective_scan_fused_cpu(inputs: ScanInputs) -> torch.Tensor:
    """:func:`~openus_monai.networks.selective_scan`'s contract (``[B, D, L]`` layout) on the fused kernel.

    Each of the ``G`` groups of channels is one direction scanned in index order. Falls back to the
    pure-PyTorch scan for ``d_state > 16``.
    """
    u, delta, A, B, C, D, delta_bias, delta_softplus = inputs
    if A.shape[-1] > MAX_STATE:
        return selective_scan_cpu(inputs)
    batch, dim, length = u.shape
    groups, d_state = B.shape[1], B.shape[2]
    per_group = dim // groups

    def token_major(x: torch.Tensor) -> torch.Tensor:  # [B, D, L] -> [B, L, G, D/G]
        return x.transpose(1, 2).reshape(batch, length, groups, per_group)

    y = fused_scan(
        token_major(u),
        token_major(delta),
        A.view(groups, per_group, d_state),
        B.permute(0, 3, 1, 2),
        C.permute(0, 3, 1, 2),
        None if D is None else D.view(groups, per_group),
        1,
        length,
        None if delta_bias is None else delta_bias.view(groups, per_group),
        delta_softplus,
        cross=False,
    )
    return y.reshape(batch, length, dim).transpose(1, 2).contiguous()
