"""``torch.export`` (``.pt2``) of the classification and segmentation networks (``tiny.json``): one program with
dynamic height and width, saved and loaded with ``torch.export.save`` / ``load``, equal to eager within 1e-4 at
two sizes. With the fused CPU scan forced (``OPENUS_SCAN_BACKEND=fused_cpu``) the program holds one
``openus_monai::fused_selective_scan`` op per SS2D (loading it needs ``import openus_monai.networks``); with the default
loop-free ``graph`` scan the program guards the chunk count of the smallest maps (a known limitation)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from openus_monai.networks import SS2D
from openus_monai.networks.ops import scan_fused

from _helpers import REPO


def _export_and_compare(bundle: str, path: Path, sizes: tuple[int, ...]) -> torch.nn.Module:
    """Export ``bundle``'s tiny network to ``path``, reload it and compare with eager at ``sizes``; returns the network."""
    from monai.bundle import ConfigParser

    folder = REPO / "bundles" / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(folder / "inference.json"), str(folder / "tiny.json")])
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def").eval()
    dims = ({2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC},)
    with torch.no_grad():  # an inference program: the fused op keeps no states for a backward
        program = torch.export.export(net, (torch.rand(1, 1, 64, 64),), dynamic_shapes=dims, strict=True)
    torch.export.save(program, path)
    loaded = torch.export.load(path).module()
    generator = torch.Generator().manual_seed(1)
    for height, width in ((s, s) for s in sizes):
        x = torch.rand(1, 1, height, width, generator=generator)
        with torch.no_grad():
            expected, got = net(x), loaded(x)
        assert got.shape == expected.shape and (got - expected).abs().max().item() <= 1e-4
    return net


@pytest.mark.skipif(not scan_fused.fused_scan_available(), reason=f"no fused kernel: {scan_fused.fused_scan_error()}")
@pytest.mark.parametrize("bundle", ["openus_cls", pytest.param("openus_seg", marks=pytest.mark.slow)])  # seg: ~30 s loaded
def test_torch_export_pt2_on_the_fused_op_matches_eager_at_two_sizes(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENUS_SCAN_BACKEND", "fused_cpu")
    net = _export_and_compare(bundle, tmp_path / "model.pt2", (64, 96))
    program = torch.export.load(tmp_path / "model.pt2")
    scans = [n for n in program.graph.nodes if "fused_selective_scan" in str(n.target)]
    assert len(scans) == sum(isinstance(m, SS2D) for m in net.modules())  # each SS2D is one op, nothing unrolled


@pytest.mark.slow  # torch.export traces the loop-free scan for minutes on a loaded 2-core CPU
@pytest.mark.xfail(strict=True, reason="known limitation: the graph-scan .pt2 program guards the chunk count of the "
                   "smallest maps to the example's (64 px works, 96 px fails the guard); ONNX export of the same "
                   "graph is unaffected, and the fused-op .pt2 above takes any size")
def test_torch_export_pt2_graph_scan_matches_eager_at_two_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENUS_SCAN_BACKEND", "graph")
    _export_and_compare("openus_cls", tmp_path / "model.pt2", (64, 96))
