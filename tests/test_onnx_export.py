"""``monai.bundle.onnx_export`` of the segmentation and classification networks (``tiny.json``), checked with ONNX
Runtime on the CPU: one export per input size (the loop-free ``graph`` scan, which the network takes while
``torch.export`` captures it), outputs equal to eager within 1e-4 at two sizes, and another size refused with an
error that names the expected one. Needs the ``export`` extra (onnx, onnxscript, onnxruntime); skipped without it.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from _helpers import REPO

pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")


@pytest.mark.slow  # two exports of ~25 s each on a 2-core CPU
@pytest.mark.parametrize("bundle", ["openus_seg", "openus_cls"])
def test_onnx_export_matches_eager_at_two_sizes(bundle, tmp_path):
    from monai.bundle import ConfigParser, onnx_export

    folder = REPO / "bundles" / bundle / "configs"
    files = [str(folder / "inference.json"), str(folder / "tiny.json")]
    parser = ConfigParser()
    parser.read_config(files)
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    torch.save(net.state_dict(), tmp_path / "model.pt")
    net.eval()
    generator = torch.Generator().manual_seed(1)

    for size in (64, 96):
        onnx_file = tmp_path / f"model_{size}.onnx"
        start = time.perf_counter()
        onnx_export(net_id="network_def", filepath=str(onnx_file), ckpt_file=str(tmp_path / "model.pt"),
                    meta_file=str(folder / "metadata.json"), config_file=files, use_trace=True,
                    input_shape=[1, 1, size, size],
                    converter_kwargs={"input_names": ["image"], "output_names": ["pred"], "dynamo": True,
                                      "optimize": False})
        print(f"{bundle}: ONNX export at {size} px {time.perf_counter() - start:.1f} s")
        session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        x = torch.rand(1, 1, size, size, generator=generator)
        with torch.no_grad():
            expected = net(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4

        other = 160 - size  # the other size: refused, naming the size the file was exported at
        with pytest.raises(Exception, match=rf"(?s)invalid dimensions.*Got: {other}.*Expected: {size}"):
            session.run(None, {"image": np.zeros((1, 1, other, other), np.float32)})
