"""The fused CPU kernel as a PyTorch custom op (``openus_monai::fused_selective_scan`` and its backward): the
op passes ``torch.library.opcheck`` (schema, fake tensors, autograd registration, AOT dispatch), and a VMamba
on the fused backend compiled by ``torch.compile`` is one graph holding the op, equal to eager (outputs and
gradients). The CI test compiles with ``aot_eager`` (Dynamo + AOTAutograd, what sees the op); inductor's C++
build of the same model takes minutes on a cold cache, measured by hand (see README's export section)."""

from __future__ import annotations

import pytest
import torch

from openus_monai.networks import VMamba
from openus_monai.networks.ops import scan_fused

from _helpers import rel_err

pytestmark = pytest.mark.skipif(not scan_fused.fused_scan_available(), reason=f"no fused kernel: {scan_fused.fused_scan_error()}")

FORWARD = torch.ops.openus_monai.fused_selective_scan.default
BACKWARD = torch.ops.openus_monai.fused_selective_scan_backward.default


def _op_inputs(shared: bool, rank: int | None = None, dim: int = 8) -> tuple:
    """A 2 x 3 grid, ``dim`` channels, state 2: ``u, dt, dt_weight, bias, A, B, C, D`` (all requiring grad); ``dt`` is
    ``[B, L, K, rank]`` with a ``dt_weight [K, D, rank]`` when ``rank`` is given, else full and no weight."""
    g = torch.Generator().manual_seed(0)
    batch, length, k, n = 1, 6, 4, 2
    u = torch.randn((batch, length, dim) if shared else (batch, length, k, dim), generator=g)
    dt = torch.rand(batch, length, k, rank or dim, generator=g)
    dt_weight = None if rank is None else torch.randn(k, dim, rank, generator=g) / rank
    tensors = (u, dt, dt_weight, torch.randn(k, dim, generator=g), -torch.rand(k, dim, n, generator=g) - 0.1,
               torch.randn(batch, length, k, n, generator=g), torch.randn(batch, length, k, n, generator=g),
               torch.randn(k, dim, generator=g))
    return tuple(None if t is None else t.requires_grad_(True) for t in tensors)


@pytest.mark.parametrize("shared,order,rank", [(True, 0, None), (False, 1, None), (True, 0, 3)])
def test_opcheck_forward_op(shared, order, rank):
    height, width = (2, 3) if order == 0 else (1, 6)
    torch.library.opcheck(FORWARD, (*_op_inputs(shared, rank), True, height, width, order, True))


@pytest.mark.parametrize("dim", [8, 83, 300])
def test_low_rank_step_sizes_equal_the_expanded_ones(dim):
    """``dt [B, L, K, R]`` with ``dt_weight`` projected inside the kernel: the output and every gradient equal
    those of the scan given ``einsum(dt, dt_weight)`` (float32, 1e-5). The kernel projects 64 channels at a time,
    then 16, then one: 83 channels take all three paths, 300 two channel blocks of the kernel (256 + 44)."""
    u, dt, w, bias, a, b, c, d = _op_inputs(True, rank=3, dim=dim)
    y_low, _ = FORWARD(u, dt, w, bias, a, b, c, d, True, 2, 3, 0, True)
    weights = torch.linspace(-1, 1, y_low.numel()).view_as(y_low)
    low = torch.autograd.grad((y_low * weights).sum(), (u, dt, w, bias, a, b, c, d))
    y_full, _ = FORWARD(u, scan_fused.low_rank_delta(dt, w), None, bias, a, b, c, d, True, 2, 3, 0, True)
    full = torch.autograd.grad((y_full * weights).sum(), (u, dt, w, bias, a, b, c, d))
    assert rel_err(y_low, y_full) < 1e-5
    for got, want in zip(low, full):
        assert rel_err(got, want) < 1e-5


def test_opcheck_backward_op():
    u, dt, _, bias, a, b, c, d = (None if t is None else t.detach() for t in _op_inputs(True))
    _, hs = FORWARD(u, dt, None, bias, a, b, c, d, True, 2, 3, 0, True)
    assert hs.shape == (1, 4, 6, 2, 8)  # [B, K, L, N, D]
    gy = torch.randn_like(u)
    torch.library.opcheck(BACKWARD, (u, dt, bias, a, b, c, d, hs, gy, True, 2, 3, 0), test_utils=("test_schema", "test_faketensor"))


def test_without_grad_no_states_are_kept():
    u, dt, _, bias, a, b, c, d = (None if t is None else t.detach() for t in _op_inputs(True))
    y, hs = FORWARD(u, dt, None, bias, a, b, c, d, True, 2, 3, 0, False)
    assert hs.numel() == 0 and y.shape == u.shape
    with torch.no_grad():  # the public wrapper asks for no states when nothing needs a gradient
        assert torch.equal(scan_fused.fused_scan(u, dt, a, b, c, d, 2, 3, bias, True), y)


def test_compiled_vmamba_on_the_fused_op_equals_eager():
    torch.manual_seed(0)
    model = VMamba(depths=(1, 1, 1, 1), dims=8, in_channels=1, scan_backend="fused_cpu")
    x = torch.randn(1, 1, 64, 64)
    captured: list[torch.fx.GraphModule] = []

    def backend(gm: torch.fx.GraphModule, example_inputs):
        captured.append(gm)
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    compiled = torch.compile(model, backend=backend, dynamic=False, fullgraph=True)  # fullgraph: no graph break
    got = compiled(x)
    assert len(captured) == 1
    scans = [n for n in captured[0].graph.nodes if "fused_selective_scan" in str(n.target)]
    assert len(scans) == 4  # one op per SS2D, nothing unrolled
    sum((m * torch.linspace(-1, 1, m.numel()).view_as(m)).sum() for m in got).backward()
    compiled_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    expected = model(x)
    sum((m * torch.linspace(-1, 1, m.numel()).view_as(m)).sum() for m in expected).backward()
    for a, b in zip(got, expected):
        assert rel_err(a.detach(), b.detach()) < 1e-4
    assert compiled_grads.keys() == {name for name, p in model.named_parameters() if p.grad is not None}
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert rel_err(compiled_grads[name], p.grad) < 1e-4, name
