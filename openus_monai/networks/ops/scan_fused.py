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

To PyTorch the kernel is two custom ops, ``openus_monai::fused_selective_scan`` and its backward
``openus_monai::fused_selective_scan_backward`` (``torch.library.custom_op``, fake implementations for shapes,
the backward registered as the forward's autograd), registered on import: ``torch.compile`` and
``torch.export`` see one op per call instead of a graph break, and a saved ``.pt2`` calls them again once
``openus_monai.networks`` is imported.
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

__all__ = [
    "MAX_STATE",
    "fused_scan",
    "fused_scan_available",
    "fused_scan_error",
    "fused_scan_operands",
    "low_rank_delta",
    "scan_token_major",
    "selective_scan_fused_cpu",
]

logger = logging.getLogger(__name__)

MAX_STATE = 16  # d_state bound of the kernel's on-stack state (csrc/fused_scan.c MAX_STATE)
SOURCE = Path(__file__).with_name("csrc") / "fused_scan.c"
_BASE_FLAGS = ["-O3", "-std=c99", "-fPIC", "-shared"]
# -std=c99 turns off multiply-add contraction: the polynomials want fused multiply-adds back (-ffp-contract=fast)
_VECTOR_FLAGS = ["-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast"]


def _flag_sets(fingerprint: str) -> tuple[list[str], ...]:
    """The compiler flag sets to try, in order, for the CPU that ``fingerprint`` (:func:`_cpu_fingerprint`) describes.

    The kernel is bound by the arithmetic of its vector loops (the softplus and ``exp`` polynomials), so on x86
    the vector width is set: 512 bits where the CPU has AVX-512 (on an AMD Zen 4 the kernel ran 1.2-1.3x faster
    than with 256, gcc's usual preference), else 256 (gcc tunes some AVX2 CPUs, AMD family 23, for 128-bit
    vectors; 256 ran 1.18x faster there).
    """
    native = ["-march=native"]
    if platform.machine() in ("x86_64", "AMD64"):
        native.append(f"-mprefer-vector-width={512 if 'avx512f' in fingerprint.split() else 256}")
    return (_BASE_FLAGS + _VECTOR_FLAGS + native, _BASE_FLAGS + _VECTOR_FLAGS + ["-march=native"],
            _BASE_FLAGS + _VECTOR_FLAGS, _BASE_FLAGS)


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
    for flags in _flag_sets(fingerprint):
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
                lib.openus_scan_fwd.argtypes = [ptr, i64, i64, i64, ptr, ptr, i64, ptr, flag] + [ptr] * 6 + [i64] * 5 + [flag] + [i64] * 4
                lib.openus_scan_bwd.argtypes = [ptr, i64, i64, i64, ptr, ptr, flag] + [ptr] * 13 + [i64] * 5 + [flag] + [i64] * 4
                lib.openus_scan_fwd.restype = lib.openus_scan_bwd.restype = None
                _state["lib"], _state["error"] = lib, None
            except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                _state["lib"], _state["error"] = None, str(err)
                logger.info("fused CPU selective scan unavailable, using the pure-PyTorch scan: %s", err)
        return _state["lib"]


@torch.compiler.assume_constant_result  # torch.compile: a constant, not a graph break on the lock inside
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


def _ustrides(u: torch.Tensor, length: int, k: int, dim: int) -> tuple[int, int, int]:
    """The kernel's (batch, token, direction) strides of ``u``: ``[B, L, D]`` is read by all ``K`` directions."""
    return (length * dim, dim, 0) if u.dim() == 3 else (length * k * dim, k * dim, dim)


@torch.library.custom_op("openus_monai::fused_selective_scan", mutates_args=(), device_types="cpu")
def _scan_op(
    u: torch.Tensor,
    dt: torch.Tensor,
    dt_weight: torch.Tensor | None,
    bias: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    softplus: bool,
    height: int,
    width: int,
    order: int,
    save_states: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward kernel as one op to dispatchers and compilers (``torch.compile``, ``torch.export``).

    Args:
        u, dt, bias, A, B, C, D: float32 tensors as :func:`fused_scan` takes them (``bias``, ``D`` ``[K, D]``, never None).
        dt_weight: ``[K, D, R]`` when ``dt`` is the low-rank ``[B, L, K, R]`` (projected inside the kernel), or None.
        softplus, height, width: as :func:`fused_scan`.
        order: 0 SS2D's four cross directions, 1 every direction in index order.
        save_states: keep the states for the backward (:func:`_scan_backward_op`).

    Returns:
        ``y`` shaped like ``u``, and the states ``hs`` ``[B, K, L, N, D]`` (empty unless ``save_states``).
    """
    lib = _library()
    (batch, length, k), (dim, n) = dt.shape[:3], A.shape[1:]
    u, dt, bias, B, C, D = (t.contiguous() for t in (u, dt, bias, B, C, D))
    A_t = A.transpose(1, 2).contiguous()  # [K, N, D]: channels contiguous
    W_t = None if dt_weight is None else dt_weight.transpose(1, 2).contiguous()  # [K, R, D]
    rank = 0 if dt_weight is None else dt_weight.shape[-1]
    y = torch.empty_like(u)  # the kernel writes every element (no zeroing)
    hs = u.new_empty(batch, k, length, n, dim) if save_states else u.new_empty(0)
    strides = _ustrides(u, length, k, dim)
    _run(
        lib.openus_scan_fwd,
        _tasks(batch, dim),
        lambda i, t: (
            _ptr(u), *strides, _ptr(dt), _ptr(W_t), rank, _ptr(bias), int(softplus), _ptr(A_t), _ptr(B), _ptr(C), _ptr(D),
            _ptr(y), _ptr(hs) if save_states else None, k, dim, n, height, width, order, *t,
        ),
    )
    return y, hs


@_scan_op.register_fake
def _(u, dt, dt_weight, bias, A, B, C, D, softplus, height, width, order, save_states):
    (batch, length, k), (dim, n) = dt.shape[:3], A.shape[1:]
    hs = u.new_empty(batch, k, length, n, dim) if save_states else u.new_empty(0)
    return torch.empty_like(u, memory_format=torch.contiguous_format), hs


@torch.library.custom_op("openus_monai::fused_selective_scan_backward", mutates_args=(), device_types="cpu")
def _scan_backward_op(
    u: torch.Tensor,
    dt: torch.Tensor,
    bias: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    hs: torch.Tensor,
    gy: torch.Tensor,
    softplus: bool,
    height: int,
    width: int,
    order: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward kernel, also one op (compiled and exported backward graphs call the kernel too).

    Args:
        u, dt, bias, A, B, C, D, softplus, height, width, order: the forward op's.
        hs: the states the forward op saved, ``[B, K, L, N, D]``.
        gy: the gradient of ``y``, shaped like ``u``.

    Returns:
        the gradients of ``u, dt, bias, A, B, C, D``, shaped like them.
    """
    lib = _library()
    batch, length, k, dim = dt.shape
    n = A.shape[-1]
    u, dt, bias, B, C, D, hs, gy = (t.contiguous() for t in (u, dt, bias, B, C, D, hs, gy))
    A_t = A.transpose(1, 2).contiguous()
    tasks = _tasks(batch, dim)
    gu, gdt = torch.zeros_like(u), torch.empty_like(dt)
    gA = u.new_zeros(batch, k, n, dim)
    gD, gbias = u.new_zeros(batch, k, dim), u.new_zeros(batch, k, dim)
    gB, gC = (u.new_zeros(len(tasks), *B.shape) for _ in range(2))  # one copy per task: no races
    strides = _ustrides(u, length, k, dim)
    _run(
        lib.openus_scan_bwd,
        tasks,
        lambda i, t: (
            _ptr(u), *strides, _ptr(dt), _ptr(bias), int(softplus), _ptr(A_t), _ptr(B), _ptr(C), _ptr(D),
            _ptr(hs), _ptr(gy), _ptr(gu), _ptr(gdt), _ptr(gA), _ptr(gB[i]), _ptr(gC[i]), _ptr(gD), _ptr(gbias),
            k, dim, n, height, width, order, *t,
        ),
    )
    return gu, gdt, gbias.sum(0), gA.sum(0).transpose(1, 2).contiguous(), gB.sum(0), gC.sum(0), gD.sum(0)


@_scan_backward_op.register_fake
def _(u, dt, bias, A, B, C, D, hs, gy, softplus, height, width, order):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (u, dt, bias, A, B, C, D))


def _setup_context(ctx, inputs, output) -> None:
    u, dt, dt_weight, bias, A, B, C, D, softplus, height, width, order, save_states = inputs
    ctx.save_for_backward(u, dt, dt_weight, bias, A, B, C, D, output[1])
    ctx.meta = (softplus, height, width, order, save_states)


def _backward(ctx, gy, _ghs):
    softplus, height, width, order, save_states = ctx.meta
    if not save_states:
        raise RuntimeError("the fused scan ran without saving its states (save_states=False): it has no backward")
    u, dt, dt_weight, bias, A, B, C, D, hs = ctx.saved_tensors
    # the backward kernel takes the full step sizes; a low-rank dt is expanded here, and its gradient folded back
    gu, gdt, gbias, gA, gB, gC, gD = _scan_backward_op(u, low_rank_delta(dt, dt_weight), bias, A, B, C, D, hs, gy,
                                                       softplus, height, width, order)
    g_weight = None
    if dt_weight is not None:
        g_weight = torch.einsum("blkd,blkr->kdr", gdt, dt)
        gdt = torch.einsum("blkd,kdr->blkr", gdt, dt_weight)
    return gu, gdt, g_weight, gbias, gA, gB, gC, gD, None, None, None, None, None


_scan_op.register_autograd(_backward, setup_context=_setup_context)


def low_rank_delta(delta: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Step sizes from their low-rank factor: ``delta [B, L, K, R]``, ``weight [K, D, R]`` -> ``[B, L, K, D]``
    (SS2D's ``dt_projs``); ``delta`` itself when ``weight`` is None."""
    return delta if weight is None else torch.einsum("blkr,kdr->blkd", delta, weight)


def fused_scan_operands(u, delta, A, B, C, D, height: int, width: int, delta_bias, cross: bool) -> tuple[torch.Tensor, ...]:
    """Check :func:`fused_scan`'s shapes and return its operands as a kernel reads them: float32, contiguous,
    ``(u, delta, delta_bias, A, B, C, D)`` with zeros ``[K, D]`` for a missing ``delta_bias`` or ``D``.

    Raises:
        ValueError: ``cross`` without 4 directions, or ``L != height * width``.
    """
    if cross and delta.shape[2] != 4:
        raise ValueError(f"cross=True needs 4 directions, got delta {tuple(delta.shape)}")
    if delta.shape[1] != height * width:
        raise ValueError(f"delta has {delta.shape[1]} positions, the grid {height} x {width} has {height * width}")
    dims = A.shape[0], A.shape[1]
    u32, dt32, A32, B32, C32 = (t.float().contiguous() for t in (u, delta, A, B, C))
    bias32 = u32.new_zeros(dims) if delta_bias is None else delta_bias.float().contiguous()
    D32 = u32.new_zeros(dims) if D is None else D.float().contiguous()  # the kernels always read a skip and a bias
    return u32, dt32, bias32, A32, B32, C32, D32


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
    delta_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """K-direction selective scan over token-major, channel-last tensors (float32 accumulation).

    ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = C_t h_t + D u_t`` along each direction's
    order of the ``height x width`` tokens.

    Args:
        u: ``[B, L, D]`` one input read by all ``K`` directions (SS2D: the outputs are summed over the
            directions, i.e. cross scan and cross merge are fused in), or ``[B, L, K, D]`` one per direction.
        delta: ``[B, L, K, D]`` step sizes (before ``delta_bias`` and softplus), or ``[B, L, K, R]``, their low-rank
            factor, with ``delta_weight``.
        A: ``[K, D, N]`` (negative), ``N <= 16``.
        B, C: ``[B, L, K, N]``.
        D: ``[K, D]`` skip or None.
        height, width: the token grid, ``L = height * width``.
        delta_bias: ``[K, D]`` added to ``delta`` or None.
        delta_softplus: apply softplus to ``delta + delta_bias`` (inside the kernel).
        cross: directions are SS2D's (rows, columns, rows reversed, columns reversed; ``K == 4``); if
            False every direction scans tokens in index order.
        delta_weight: ``[K, D, R]``: the step sizes are ``einsum("blkr,kdr->blkd", delta, delta_weight)``
            (SS2D's ``dt_projs_weight``), projected inside the kernel so that ``[B, L, K, D]`` is never
            stored in the forward (the backward expands them).

    Returns:
        ``[B, L, D]`` (shared ``u``) or ``[B, L, K, D]``, in ``u.dtype``.
    """
    if not fused_scan_available():
        raise RuntimeError(f"the fused CPU selective scan is unavailable: {fused_scan_error()}")
    if A.shape[-1] > MAX_STATE:
        raise ValueError(f"the fused CPU selective scan supports d_state <= {MAX_STATE}, got {A.shape[-1]}")
    if any(t.device.type != "cpu" for t in (u, delta, A, B, C)):
        raise RuntimeError("the fused CPU selective scan runs on CPU tensors only")
    u32, dt32, bias32, A32, B32, C32, D32 = fused_scan_operands(u, delta, A, B, C, D, height, width, delta_bias, cross)
    W32 = None if delta_weight is None else delta_weight.float()
    operands = (u32, dt32, W32, bias32, A32, B32, C32, D32)
    save_states = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in operands)
    y, _ = _scan_op(*operands, delta_softplus, height, width, 0 if cross else 1, save_states)
    return y.to(u.dtype)


def scan_token_major(inputs: ScanInputs, scan=None) -> torch.Tensor:
    """:func:`~openus_monai.networks.selective_scan`'s contract (``[B, D, L]`` layout) on a :func:`fused_scan`-like
    function ``scan`` (default :func:`fused_scan`): each of the ``G`` groups of channels is one direction,
    scanned in index order (``cross=False``) on token-major ``[B, L, G, D/G]`` tensors.

    Returns:
        ``y [B, D, L]``.
    """
    u, delta, A, B, C, D, delta_bias, delta_softplus = inputs
    batch, dim, length = u.shape
    groups, d_state = B.shape[1], B.shape[2]
    per_group = dim // groups

    def token_major(x: torch.Tensor) -> torch.Tensor:  # [B, D, L] -> [B, L, G, D/G]
        return x.transpose(1, 2).reshape(batch, length, groups, per_group)

    y = (scan or fused_scan)(
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


def selective_scan_fused_cpu(inputs: ScanInputs) -> torch.Tensor:
    """:func:`~openus_monai.networks.selective_scan`'s contract (``[B, D, L]`` layout) on the fused kernel.

    Each of the ``G`` groups of channels is one direction scanned in index order. Falls back to the
    pure-PyTorch scan for ``d_state > 16``.
    """
    if inputs.A.shape[-1] > MAX_STATE:
        return selective_scan_cpu(inputs)
    return scan_token_major(inputs)
