"""TorchScript exports of the segmentation and classification networks through MONAI's ``ckpt_export``.

The bundles script their networks (``tests/test_zoo_ci.py``); tracing (``use_trace=True``, at the inference
size, with the pure-PyTorch scan) stays supported for whoever wants a trace. The traced file must

- give the eager model's outputs (within 1e-5) at the traced height and width, for any batch size;
- load and run in a Python process where ``openus_monai`` cannot be imported, with the bundle's
  ``metadata.json`` and configs inside (as MONAI's ``ckpt_export`` stores them);
- refuse another height and width with an error (the scan's loops are unrolled for the traced sequence
  lengths), never return wrong numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from _helpers import REPO

SIZE = 64  # configs/tiny.json's image_size: the size the inference pipeline feeds the network
KEY_IN_CKPT = {"openus_seg": "model", "openus_cls": "model"}  # {"model", "network_config"(, "class_names")}
CLASSES = ["benign", "malignant", "normal"]

LOADER = textwrap.dedent(
    """
    import sys
    sys.modules["openus_monai"] = None  # importing the package now fails: the file must carry everything
    import torch

    path, inputs, out = sys.argv[1:4]
    extra = {"metadata.json": "", "inference.json": "", "tiny.json": ""}
    model = torch.jit.load(path, map_location="cpu", _extra_files=extra)
    results = {"extra": {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items()}, "outputs": []}
    with torch.no_grad():
        for x in torch.load(inputs, weights_only=True):
            try:
                results["outputs"].append(model(x))
            except RuntimeError as e:
                results["outputs"].append(str(e).splitlines()[-1])
    torch.save(results, out)
    """
)


def build_network(bundle: str, ckpt_dir: Path) -> torch.nn.Module:
    """The bundle's inference ``network_def`` (with ``configs/tiny.json``), random weights, saved to
    ``ckpt_dir/model.pt`` in the bundle's checkpoint format."""
    from monai.bundle import ConfigParser

    folder = REPO / "bundles" / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(folder / "inference.json"), str(folder / "tiny.json")])
    if bundle == "openus_cls":  # inference reads the class names (hence num_classes) from the checkpoint
        parser["class_names"] = CLASSES
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    with torch.no_grad():  # non-trivial norms and biases, so that a wrongly mapped weight shows
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    state = net.state_dict()
    ckpt_dir.mkdir(parents=True)
    torch.save({"model": state, "class_names": CLASSES} if bundle == "openus_cls" else {"model": state}, ckpt_dir / "model.pt")
    return net.eval()


@pytest.mark.parametrize("bundle", sorted(KEY_IN_CKPT))
def test_traced_export_matches_eager_and_loads_without_the_package(bundle, tmp_path, monkeypatch):
    from monai.bundle import ckpt_export

    # the pure-PyTorch scan: compiled kernels (C via ctypes, CUDA) and autograd Functions cannot be traced
    monkeypatch.setenv("OPENUS_SCAN_BACKEND", "torch")

    folder = REPO / "bundles" / bundle / "configs"
    net = build_network(bundle, tmp_path / "models")
    ts_file = tmp_path / "model.ts"
    # = OPENUS_SCAN_BACKEND=torch python -m monai.bundle ckpt_export network_def --filepath ... --ckpt_file ... --key_in_ckpt ... --meta_file ...
    #   --config_file "[inference.json, tiny.json]" --use_trace True --input_shape "[1, 1, 64, 64]" --ckpt_dir ...
    ckpt_export(net_id="network_def", filepath=str(ts_file), ckpt_file=str(tmp_path / "models" / "model.pt"),
                key_in_ckpt=KEY_IN_CKPT[bundle], meta_file=str(folder / "metadata.json"),
                config_file=[str(folder / "inference.json"), str(folder / "tiny.json")],
                use_trace=True, input_shape=[1, 1, SIZE, SIZE], ckpt_dir=str(tmp_path / "models"))
    assert ts_file.stat().st_size > 10_000

    generator = torch.Generator().manual_seed(1)
    inputs = [torch.rand(1, 1, SIZE, SIZE, generator=generator), torch.rand(3, 1, SIZE, SIZE, generator=generator),
              torch.rand(1, 1, SIZE + 32, SIZE + 32, generator=generator)]
    torch.save(inputs, tmp_path / "inputs.pt")
    proc = subprocess.run([sys.executable, "-c", LOADER, str(ts_file), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    results = torch.load(tmp_path / "out.pt", weights_only=True)

    meta = json.loads(results["extra"]["metadata.json"])
    assert meta["version"] == json.loads((folder / "metadata.json").read_text())["version"]
    assert json.loads(results["extra"]["inference.json"])["network_def"] == json.loads(
        (folder / "inference.json").read_text())["network_def"]
    with torch.no_grad():
        for x, exported in zip(inputs[:2], results["outputs"][:2]):
            eager = net(x)
            assert isinstance(exported, torch.Tensor) and exported.shape == eager.shape
            assert (exported - eager).abs().max().item() <= 1e-5
        assert net(inputs[2]).shape[0] == 1  # eager takes any multiple of 32 ...
    assert isinstance(results["outputs"][2], str), "the traced model must refuse a size it was not traced for"
    assert "invalid" in results["outputs"][2] or "shape" in results["outputs"][2]  # ... the traced one refuses it
