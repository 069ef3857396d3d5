"""The opt-in Triton scan (``backend="triton"``) under Triton's interpreter on the CPU: forward and every gradient
equal the sequential reference scan's (read in each direction's token order), and it is never auto-selected."""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")  # conftest.py sets it first: before torch imports triton

import pytest
import torch

from openus_monai.networks import SS2D
from openus_monai.networks.ops import scan_triton
from openus_monai.networks.ops.cross_scan import direction_orders
from openus_monai.networks.ops.scan_inputs import ScanInputs
from openus_monai.networks.ops.scan_reference import selective_scan_reference
from openus_monai.networks.ops.selective_scan import available_backends, resolve_backend, selective_scan

from _helpers import rel_err

needs_triton = pytest.mark.skipif(not scan_triton.HAS_TRITON, reason="triton is not installed (pip install triton)")
interpreted = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="TRITON_INTERPRET is set to something else than 1")
TOL = 1e-4  # float32, relative to the largest entry


def reference_fused_scan(u, delta, A, B, C, D, height, width, delta_bias=None, delta_softplus=False, cross=True):
    """:func:`fused_scan`'s semantics from the sequential reference: gather each direction's tokens, scan them
    (one group of channels per direction), put the outputs back in token order; autograd gives the gradients."""
    batch, length, k, dim = delta.shape
    orders = direction_orders(height, width) if cross else torch.arange(length).expand(k, length)
    per_dir = u.unsqueeze(2).expand(-1, -1, k, -1) if u.dim() == 3 else u

    def steps(x):  # [B, L, K, C] token-major -> [B, K * C, L] in each direction's step order
        return torch.stack([x[:, orders[j], j] for j in range(k)], 1).transpose(2, 3).reshape(batch, -1, length)

    def groups(x):  # [B, L, K, N] -> [B, K, N, L] in step order
        return torch.stack([x[:, orders[j], j] for j in range(k)], 1).transpose(2, 3)

    flat = lambda x: None if x is None else x.reshape(-1)  # noqa: E731
    ys = selective_scan_reference(
        ScanInputs(steps(per_dir), steps(delta), A.reshape(k * dim, -1), groups(B), groups(C), flat(D), flat(delta_bias), delta_softplus)
    ).view(batch, k, dim, length)
    y = torch.stack([ys[:, j, :, torch.argsort(orders[j])].transpose(1, 2) for j in range(k)], 2)  # [B, L, K, D]
    return y.sum(2) if u.dim() == 3 else y


def make_inputs(shared, k, height, width, dim, n, skip, seed=0):
    """Random scan inputs (``A`` negative, ``delta`` around 0 so softplus sees both signs), requiring grad."""
    g = torch.Generator().manual_seed(seed)
    length = height * width
    u = torch.randn((1, length, dim) if shared else (1, length, k, dim), generator=g)
    delta = torch.randn(1, length, k, dim, generator=g) * 0.5
    A = -torch.rand(k, dim, n, generator=g) - 0.2
    B, C = torch.randn(1, length, k, n, generator=g), torch.randn(1, length, k, n, generator=g)
    D = torch.randn(k, dim, generator=g) if skip else None
    bias = torch.randn(k, dim, generator=g) * 0.3 if skip else None
    return [t if t is None else t.requires_grad_(True) for t in (u, delta, A, B, C, D, bias)]


def outputs_and_grads(fn, inputs, height, width, softplus, cross):
    u, delta, A, B, C, D, bias = inputs
    y = fn(u, delta, A, B, C, D, height, width, bias, softplus, cross)
    weights = torch.linspace(-1, 1, y.numel()).view_as(y)
    used = [t for t in inputs if t is not None]
    return y.detach(), dict(zip("u delta A B C D delta_bias".split(), torch.autograd.grad((y * weights).sum(), used)))


# (cross, shared u, K, height, width, d_state, D and delta_bias, softplus)
CASES = [
    (True, True, 4, 3, 5, 4, True, True),  # SS2D: four directions over a non-square grid
    (True, True, 4, 3, 5, 1, False, False),
    (True, True, 4, 1, 1, 4, True, False),  # L = 1
    (False, False, 2, 2, 3, 1, True, True),  # K plain sequences, one input each
    (False, False, 3, 1, 4, 4, False, True),
]


@needs_triton
@interpreted
@pytest.mark.parametrize("cross,shared,k,height,width,n,skip,softplus", CASES)
def test_triton_scan_equals_reference(cross, shared, k, height, width, n, skip, softplus):
    inputs = make_inputs(shared, k, height, width, 6, n, skip)
    y, grads = outputs_and_grads(scan_triton.triton_fused_scan, inputs, height, width, softplus, cross)
    y_ref, grads_ref = outputs_and_grads(reference_fused_scan, inputs, height, width, softplus, cross)
    assert y.shape == y_ref.shape
    assert rel_err(y, y_ref) < TOL
    assert grads.keys() == grads_ref.keys()
    for name, grad in grads_ref.items():
        assert rel_err(grads[name], grad) < TOL, name


@needs_triton
@interpreted
def test_triton_scan_under_no_grad_saves_no_states(monkeypatch):
    """Inference (``no_grad``, inputs that require grad as a model's parameters do) runs the forward kernel alone,
    without the ``[B, K, L, D, N]`` states a backward would read, and gives the same output."""
    inputs = make_inputs(True, 4, 3, 5, 6, 4, True)
    u, delta, A, B, C, D, bias = inputs
    y_grad = scan_triton.triton_fused_scan(u, delta, A, B, C, D, 3, 5, bias, True, True)
    saved = []
    forward = scan_triton._forward
    monkeypatch.setattr(scan_triton, "_forward", lambda *args: saved.append(args[-1]) or forward(*args))
    with torch.no_grad():
        y = scan_triton.triton_fused_scan(u, delta, A, B, C, D, 3, 5, bias, True, True)
    assert saved == [False] and not y.requires_grad
    assert torch.equal(y, y_grad.detach())


@needs_triton
@interpreted
def test_selective_scan_backend_triton_equals_reference():
    """The ``[B, D, L]`` contract (two groups of channels = two directions) through ``backend="triton"``."""
    g = torch.Generator().manual_seed(3)
    u, delta = torch.randn(1, 4, 5, generator=g), torch.randn(1, 4, 5, generator=g)
    A = -torch.rand(4, 2, generator=g) - 0.2
    B, C = torch.randn(1, 2, 2, 5, generator=g), torch.randn(1, 2, 2, 5, generator=g)
    D, bias = torch.randn(4, generator=g), torch.randn(4, generator=g)
    inputs = [t.requires_grad_(True) for t in (u, delta, A, B, C, D, bias)]
    results = {}
    for backend in ("triton", "reference"):
        y = selective_scan(*inputs, delta_softplus=True, backend=backend)
        results[backend] = (y.detach(), torch.autograd.grad(y.sin().sum(), inputs))
    assert rel_err(results["triton"][0], results["reference"][0]) < TOL
    for got, want in zip(results["triton"][1], results["reference"][1]):
        assert rel_err(got, want) < TOL


@needs_triton
@interpreted
def test_ss2d_opt_in_equals_pure_pytorch():
    torch.manual_seed(0)
    module = SS2D(4, d_state=2, ssm_ratio=1.0)
    x = torch.randn(1, 4, 2, 3)
    results = {}
    for backend in ("triton", "torch"):
        module.scan_backend = backend
        module.zero_grad(set_to_none=True)
        out = module(x)
        out.square().sum().backward()
        results[backend] = out.detach(), {name: p.grad.clone() for name, p in module.named_parameters()}
    assert rel_err(results["triton"][0], results["torch"][0]) < TOL
    for name, grad in results["torch"][1].items():
        assert rel_err(results["triton"][1][name], grad) < TOL, name


def test_triton_is_never_auto_selected(monkeypatch):
    monkeypatch.delenv("OPENUS_SCAN_BACKEND", raising=False)
    for device in ("cpu", "cuda"):
        assert "triton" not in available_backends(device)
        assert resolve_backend(device) != "triton"


def test_forcing_triton_where_it_cannot_run_says_why(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="triton"):
        resolve_backend("cpu", "triton")
    with pytest.raises(RuntimeError, match="CUDA tensors" if scan_triton.HAS_TRITON else "not installed"):
        scan_triton.triton_fused_scan(*make_inputs(True, 4, 1, 2, 2, 1, False)[:5], None, 1, 2)


@needs_triton
@interpreted
def test_forcing_triton_under_the_interpreter(monkeypatch):
    monkeypatch.setenv("OPENUS_SCAN_BACKEND", "triton")
    assert resolve_backend("cpu") == "triton"
    zero = torch.zeros(())  # expanded, nothing allocated: states [1, 4, 256 * 256, 1024, 8] would pass int32 indexing
    u, delta, A, BC = zero.expand(1, 2**16, 2**10), zero.expand(1, 2**16, 4, 2**10), zero.expand(4, 2**10, 8), zero.expand(1, 2**16, 4, 8)
    with pytest.raises(ValueError, match="int32"):
        scan_triton.triton_fused_scan(u, delta, A, BC, BC, None, 256, 256)
    from triton.runtime.interpreter import InterpretedFunction

    assert all(isinstance(kernel, InterpretedFunction) for kernel in scan_triton._compiled())  # triton honours it


COMPILE_FOR_SM90 = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from openus_monai.networks.ops import scan_triton

forward, backward = scan_triton._compiled()  # TRITON_INTERPRET=0: the kernels a GPU would run
for kernel, consts in ((forward, dict(SOFTPLUS=True, SAVE=True)), (backward, dict(SOFTPLUS=True))):
    consts.update(BLOCK_D=64, BLOCK_N=16)
    types = {"order_ptr": "*i32"}
    signature = {a: "constexpr" if a in consts else types.get(a, "*fp32" if a.endswith("_ptr") else "i32") for a in kernel.arg_names}
    compiled = triton.compile(ASTSource(kernel, signature, consts), target=GPUTarget("cuda", 90, 32))
    assert compiled.asm["cubin"], kernel.fn.__name__
    print(kernel.fn.__name__, "sm_90 cubin", len(compiled.asm["cubin"]), "bytes")
"""


@needs_triton
def test_kernels_compile_for_a_gpu_without_one(tmp_path):
    """Triton's compiler and the ptxas its wheel ships build both kernels into sm_90 machine code on the CPU:
    what the interpreter cannot check (types, loop-carried values, constexpr branches). Nothing runs. In a
    process of its own: Triton decorates its own library for the interpreter when TRITON_INTERPRET=1 at import."""
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_CACHE_DIR=str(tmp_path), PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", COMPILE_FOR_SM90], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("sm_90 cubin") == 2
