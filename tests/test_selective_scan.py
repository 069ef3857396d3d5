"""Every selective-scan backend against the sequential reference, forward and backward."""

from __future__ import annotations

import pytest
import torch

from openus_monai.networks import available_backends, linear_recurrence, selective_scan
from openus_monai.networks.ops.selective_scan import resolve_backend

from _helpers import rel_err

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FAST = [(dev, name) for dev in DEVICES for name in available_backends(dev) if name != "reference"]


def make_inputs(batch, dim, length, d_state, groups, dt_scale, device, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    tensors = dict(
        u=r(batch, dim, length),
        delta=r(batch, dim, length) * dt_scale,
        A=-torch.exp(r(dim, d_state) * 0.5),
        B=r(batch, groups, d_state, length),
        C=r(batch, groups, d_state, length),
        D=r(dim),
        delta_bias=r(dim) * 0.1,
    )
    out = {}
    for k, v in tensors.items():
        v = v.to(device, dtype if k in ("u", "delta", "B", "C") else torch.float32)
        out[k] = v.requires_grad_(True)
    return out


def run(inputs, backend):
    y = selective_scan(**inputs, delta_softplus=True, backend=backend)
    weight = torch.linspace(-1, 1, y.numel(), device=y.device).view_as(y)
    (y.float() * weight).sum().backward()
    grads = {k: v.grad.clone() for k, v in inputs.items()}
    for v in inputs.values():
        v.grad = None
    return y.detach(), grads


CASES = [
    # batch, dim, length, d_state, groups, dt_scale
    (2, 8, 1, 1, 4, 1.0),  # L = 1
    (2, 8, 17, 1, 4, 1.0),  # odd L
    (1, 8, 3136, 1, 4, 1.0),  # 56 x 56
    (2, 6, 33, 16, 2, 1.0),  # d_state 16
    (2, 8, 64, 1, 4, 30.0),  # large steps (softplus(x) ~ x up to ~1e2)
    (2, 8, 64, 4, 1, 1e-3),  # tiny steps
    (1, 4, 257, 16, 1, 8.0),
]


@pytest.mark.parametrize("device,backend", FAST)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}d{}l{}n{}g{}s{}".format(*c))
def test_backend_matches_reference(device, backend, case):
    inputs = make_inputs(*case, device=device)
    y_ref, g_ref = run(inputs, "reference")
    y, g = run(inputs, backend)
    assert torch.isfinite(y).all()
    assert rel_err(y, y_ref) < 1e-5
    for name in g_ref:
        assert torch.isfinite(g[name]).all(), name
        assert rel_err(g[name], g_ref[name]) < 1e-5, name


@pytest.mark.parametrize("device,backend", FAST)
def test_backend_bf16_inputs(device, backend):
    """bf16 inputs (float32 accumulation): within 1e-2 relative of the float32 reference on the same rounded values."""
    inputs = make_inputs(2, 8, 128, 1, 4, 1.0, device=device, dtype=torch.bfloat16)
    y, _ = run(inputs, backend)
    ref_inputs = {k: v.detach().float().requires_grad_(True) for k, v in inputs.items()}
    y_ref, _ = run(ref_inputs, "reference")
    assert y.dtype == torch.bfloat16
    assert rel_err(y.float(), y_ref) < 1e-2


@pytest.mark.parametrize("backend", [name for dev, name in FAST if dev == "cpu"])
def test_extreme_step_sizes_stay_finite(backend):
    inputs = make_inputs(1, 4, 3136, 1, 1, 1e3, device="cpu")
    with torch.no_grad():
        inputs["A"].copy_(-torch.exp(torch.full_like(inputs["A"], 8.0)))  # A_logs large
    y, g = run(inputs, backend)
    assert torch.isfinite(y).all() and all(torch.isfinite(v).all() for v in g.values())


def test_linear_recurrence_reverse_matches_loop():
    a, b = torch.rand(5, 7, 3), torch.randn(5, 7, 3)
    h = linear_recurrence(a, b, dim=1, reverse=True)
    expected = torch.zeros_like(b)
    acc = torch.zeros(5, 3)
    for t in range(6, -1, -1):
        acc = a[:, t] * acc + b[:, t]
        expected[:, t] = acc
    torch.testing.assert_close(h, expected)


def test_backend_selection(monkeypatch):
    monkeypatch.delenv("OPENUS_SCAN_BACKEND", raising=False)
    assert resolve_backend("cpu") == available_backends("cpu")[0]
    assert available_backends("cpu")[-2:] == ["torch", "reference"]
    monkeypatch.setenv("OPENUS_SCAN_BACKEND", "reference")
    assert resolve_backend("cpu") == "reference"
    monkeypatch.setenv("OPENUS_SCAN_BACKEND", "nope")
    with pytest.raises(ValueError, match="unknown selective-scan backend 'nope'"):
        resolve_backend("cpu")
    with pytest.raises(RuntimeError, match="'mamba_ssm' was forced but cannot run on cpu"):
        resolve_backend("cpu", "mamba_ssm")
