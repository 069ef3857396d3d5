"""``torch.export`` (``.pt2``) of the classification network (``tiny.json``): one program with dynamic height and
width (the loop-free ``graph`` scan, taken while exporting), saved and loaded with ``torch.export.save`` /
``load``, equal to eager within 1e-4 at two sizes."""

from __future__ import annotations

import pytest
import torch

from _helpers import REPO


@pytest.mark.slow  # torch.export traces for minutes on a loaded 2-core CPU
@pytest.mark.xfail(strict=True, reason="known limitation: the .pt2 program guards the chunk count of the smallest "
                   "maps to the example's (64 px works, 96 px fails the guard); ONNX export of the same graph is unaffected")
def test_torch_export_pt2_matches_eager_at_two_sizes(tmp_path):
    from monai.bundle import ConfigParser

    folder = REPO / "bundles" / "openus_cls" / "configs"
    parser = ConfigParser()
    parser.read_config([str(folder / "inference.json"), str(folder / "tiny.json")])
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def").eval()
    dims = ({2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC},)
    program = torch.export.export(net, (torch.rand(1, 1, 64, 64),), dynamic_shapes=dims, strict=True)
    torch.export.save(program, tmp_path / "model.pt2")
    loaded = torch.export.load(tmp_path / "model.pt2").module()
    generator = torch.Generator().manual_seed(1)
    for size in (64, 96):
        x = torch.rand(1, 1, size, size, generator=generator)
        with torch.no_grad():
            expected, got = net(x), loaded(x)
        assert got.shape == expected.shape and (got - expected).abs().max().item() <= 1e-4
