"""The fused CPU kernel: SS2D on it equals SS2D on the pure-PyTorch scan, threads split the work without
changing the numbers, and without a C compiler everything falls back to the pure-PyTorch scan."""

from __future__ import annotations

import pytest
import torch

from openus_monai.networks import SS2D
from openus_monai.networks.ops import scan_fused
from openus_monai.networks.ops.cross_scan import cross_scan
from openus_monai.networks.ops.selective_scan import available_backends, resolve_backend, selective_scan

from _helpers import rel_err

needs_kernel = pytest.mark.skipif(not scan_fused.fused_scan_available(), reason=f"no fused kernel: {scan_fused.fused_scan_error()}")


def ss2d_outputs_and_grads(module: SS2D, x: torch.Tensor, backend: str):
    module.scan_backend = backend
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = module(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    return out.detach(), x.grad, grads


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape,d_state", [((2, 16, 5, 7), 1), ((1, 16, 8, 8), 4), ((3, 8, 1, 9), 1)])
def test_ss2d_fused_equals_pure_pytorch(shape, d_state, threads):
    torch.manual_seed(0)
    module = SS2D(shape[1], d_state=d_state)
    with torch.no_grad():
        module.A_logs.normal_(0.0, 1.0)
        module.Ds.normal_()
    x = torch.randn(shape)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fused = ss2d_outputs_and_grads(module, x, "fused_cpu")
    finally:
        torch.set_num_threads(before)
    plain = ss2d_outputs_and_grads(module, x, "torch")
    assert rel_err(fused[0], plain[0]) < 1e-5
    assert rel_err(fused[1], plain[1]) < 1e-5
    for name, grad in plain[2].items():
        assert rel_err(fused[2][name], grad) < 1e-5, name


@needs_kernel
def test_cross_directions_match_explicit_cross_scan():
    """cross=True reads the four SS2D orders itself: compare with the explicit cross scan + reference scan."""
    torch.manual_seed(1)
    batch, height, width, dim, n = 2, 3, 5, 8, 2
    u = torch.randn(batch, height * width, dim)
    delta = torch.rand(batch, height * width, 4, dim)
    a = -torch.rand(4, dim, n) - 0.1
    b, c = torch.randn(batch, height * width, 4, n), torch.randn(batch, height * width, 4, n)
    d = torch.randn(4, dim)
    y = scan_fused.fused_scan(u, delta, a, b, c, d, height, width)

    def sequences(t: torch.Tensor) -> torch.Tensor:  # [B, L, ..., C] token-major -> [B, 4, C, L] per direction
        grid = t.movedim(1, -1).reshape(batch, -1, height, width)
        return cross_scan(grid)

    us = sequences(u)  # [B, 4, D, L]
    deltas = torch.stack([sequences(delta[:, :, k])[:, k] for k in range(4)], 1)
    bs = torch.stack([sequences(b[:, :, k])[:, k] for k in range(4)], 1)
    cs = torch.stack([sequences(c[:, :, k])[:, k] for k in range(4)], 1)
    ys = selective_scan(us.reshape(batch, 4 * dim, -1), deltas.reshape(batch, 4 * dim, -1), a.reshape(4 * dim, n), bs, cs, d.reshape(-1), backend="reference")
    ys = ys.view(batch, 4, dim, -1)
    order = torch.arange(height * width).view(height, width)
    tokens = [order.flatten(), order.t().flatten(), order.flatten().flip(0), order.t().flatten().flip(0)]
    expected = torch.zeros(batch, dim, height * width)
    for k in range(4):
        expected[:, :, tokens[k]] += ys[:, k]
    assert rel_err(y, expected.transpose(1, 2)) < 1e-5


def test_without_a_compiler_falls_back_to_pure_pytorch(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setenv("OPENUS_KERNEL_CACHE", str(tmp_path))
    monkeypatch.delenv("OPENUS_SCAN_BACKEND", raising=False)
    monkeypatch.setattr(scan_fused, "_state", {})
    assert not scan_fused.fused_scan_available()
    assert "no C compiler" in scan_fused.fused_scan_error()
    assert available_backends("cpu") == ["torch", "reference"]
    assert resolve_backend("cpu") == "torch"
    with pytest.raises(RuntimeError, match="'fused_cpu' was forced but cannot run on cpu: the kernel could not be built"):
        resolve_backend("cpu", "fused_cpu")
    module = SS2D(8)
    assert torch.isfinite(module(torch.randn(1, 8, 4, 4))).all()


@needs_kernel
def test_kernel_is_compiled_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENUS_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(scan_fused, "_state", {})
    assert scan_fused.fused_scan_available()
    built = sorted(tmp_path.glob("fused_scan-*.so"))
    assert len(built) == 1 and not [p for p in tmp_path.iterdir() if p.is_dir()]  # no temporary build folder left
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(scan_fused, "_state", {})
    assert scan_fused.fused_scan_available()
    assert built[0].stat().st_mtime_ns == stamp


def test_vector_width_follows_the_cpu(monkeypatch):
    """On x86 the first flag set asks for 512-bit vectors where the CPU lists avx512f, else 256; every set
    after it drops a flag, down to the portable one."""
    monkeypatch.setattr(scan_fused.platform, "machine", lambda: "x86_64")
    wide = scan_fused._flag_sets("x86_64flags\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    narrow = scan_fused._flag_sets("x86_64flags\t: fpu sse2 avx2\n")
    assert "-mprefer-vector-width=512" in wide[0] and "-mprefer-vector-width=256" in narrow[0]
    assert wide[1:] == narrow[1:] and not any("vector-width" in f for flags in wide[1:] for f in flags)
    assert "-march=native" not in wide[-1]
    monkeypatch.setattr(scan_fused.platform, "machine", lambda: "aarch64")
    assert not any("vector-width" in f for f in scan_fused._flag_sets("aarch64Features\t: fp asimd\n")[0])


@needs_kernel
def test_tracing_uses_the_pure_pytorch_scan():
    """A tracer cannot see inside the C kernel; traced SS2D must still compute, not replay constants."""
    torch.manual_seed(0)
    module = SS2D(8).eval()
    x = torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        traced = torch.jit.trace(module, torch.randn(1, 8, 4, 4))
        assert rel_err(traced(x), module(x)) < 1e-5
    assert resolve_backend("cpu") == "fused_cpu"


@needs_kernel
def test_kernel_refuses_what_it_cannot_do():
    u, delta = torch.randn(1, 6, 4), torch.rand(1, 6, 4, 4)
    b = c = torch.randn(1, 6, 4, 1)
    with pytest.raises(ValueError, match="d_state <= 16"):
        scan_fused.fused_scan(u, delta, -torch.rand(4, 4, 17), b, c, None, 2, 3)
    with pytest.raises(ValueError, match="grid 2 x 2 has 4"):
        scan_fused.fused_scan(u, delta, -torch.rand(4, 4, 1), b, c, None, 2, 2)


def _small_scan_inputs():
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g)
    return r(1, 6, 32), r(1, 6, 4, 32), -torch.rand(4, 32, 1, generator=g), r(1, 6, 4, 1), r(1, 6, 4, 1), None, 2, 3


def _scan_in_child(queue) -> None:
    torch.set_num_threads(2)
    queue.put(float(scan_fused.fused_scan(*_small_scan_inputs()).sum()))


@needs_kernel
def test_forked_child_gets_its_own_thread_pool():
    """A fork copies the pool object but not its threads; the child must not wait on them forever.
    (Tensors small enough that PyTorch's own thread pool, not fork-safe, stays out of it.)"""
    import multiprocessing

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = float(scan_fused.fused_scan(*_small_scan_inputs()).sum())  # the parent's pool exists now
    finally:
        torch.set_num_threads(before)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_scan_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung in the fused scan")
    assert child.exitcode == 0 and queue.get(timeout=5) == expected
