"""The loop-free selective scan (``graph`` backend: scripting, ``torch.export``, ONNX) against the sequential
oracle, for lengths that do and do not fill whole chunks, grouped B/C and d_state > 1; and scripted."""

from __future__ import annotations

import pytest
import torch

from openus_monai.networks.ops.scan_graph import selective_scan_graph
from openus_monai.networks.ops.scan_inputs import ScanInputs
from openus_monai.networks.ops.scan_reference import selective_scan_reference
from openus_monai.networks.ops.selective_scan import SCAN_BACKENDS


@pytest.mark.parametrize("batch,dim,length,groups,d_state", [(2, 8, 37, 4, 1), (1, 6, 100, 2, 3), (1, 4, 1, 1, 2)])
@pytest.mark.parametrize("chunk", [1, 16, 64])
def test_graph_scan_equals_the_reference(batch, dim, length, groups, d_state, chunk):
    g = torch.Generator().manual_seed(length)
    inputs = ScanInputs(torch.randn(batch, dim, length, generator=g), torch.randn(batch, dim, length, generator=g),
                        -2 * torch.rand(dim, d_state, generator=g), torch.randn(batch, groups, d_state, length, generator=g),
                        torch.randn(batch, groups, d_state, length, generator=g), torch.randn(dim, generator=g),
                        torch.randn(dim, generator=g), True)
    expected = selective_scan_reference(inputs)
    assert (selective_scan_graph(*inputs, chunk=chunk) - expected).abs().max().item() <= 1e-4
    assert (SCAN_BACKENDS["graph"](inputs) - expected).abs().max().item() <= 1e-4


def test_graph_scan_scripts_and_handles_long_sequences():
    g = torch.Generator().manual_seed(0)
    length = 3136  # 56 x 56: the first stage at 224 px
    inputs = ScanInputs(torch.randn(1, 4, length, generator=g), torch.randn(1, 4, length, generator=g) + 2,
                        -4 * torch.rand(4, 1, generator=g), torch.randn(1, 4, 1, length, generator=g),
                        torch.randn(1, 4, 1, length, generator=g), None, None, True)
    scripted = torch.jit.script(selective_scan_graph)
    got = scripted(*inputs, 16)
    assert torch.isfinite(got).all()  # strong decays: no overflow (no division by a decay)
    assert (got - selective_scan_reference(inputs)).abs().max().item() <= 1e-4
