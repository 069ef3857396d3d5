"""bfloat16 inference on the CPU: ``AutocastInferer`` around a network whose weights ``cast_weights_for_autocast``
stored in bfloat16 (the bundles' ``cpu_bf16`` option)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigWorkflow
from monai.inferers import SimpleInferer
from PIL import Image

from _helpers import scratch_outputs
from openus_monai.networks import AutocastInferer, OpenUSSegNet, cast_weights_for_autocast

REPO = Path(__file__).resolve().parents[1]


def test_autocast_inferer_returns_float32_close_to_float32_inference():
    torch.manual_seed(0)
    net = OpenUSSegNet(encoder={"depths": (1, 1, 1, 1), "dims": 16}, in_channels=1, num_classes=2).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        full = SimpleInferer()(x, net)
        half = AutocastInferer()(x, cast_weights_for_autocast(net))
    assert half.dtype == torch.float32 and half.shape == full.shape
    err = float((half - full).norm() / full.norm())
    assert 1e-5 < err < 3e-2, err  # bf16's own tolerance, and clearly not a float32 run
    nested = AutocastInferer(lambda inputs, network: {"a": network(inputs), "b": [network(inputs), 3]})(x, net)
    assert nested["a"].dtype == nested["b"][0].dtype == torch.float32 and nested["b"][1] == 3


def test_seg_bundle_inference_with_cpu_bf16(tmp_path):
    """``--cpu_bf16 true``: the bundle's network holds bfloat16 GEMM weights, its evaluator an AutocastInferer,
    and inference writes one label map per image, as in float32."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (70, 90), dtype=np.uint8)).save(images / f"{name}.png")
    configs = REPO / "bundles" / "openus_seg" / "configs"
    out = tmp_path / "out"
    workflow = ConfigWorkflow(config_file=[str(configs / "inference.json"), str(configs / "tiny.json")],
                              meta_file=str(configs / "metadata.json"), workflow_type="train",
                              **scratch_outputs({"dataset_dir": str(images), "output_dir": str(out), "load_pretrain": False,
                                                 "num_workers": 0, "cpu_bf16": True}))
    workflow.initialize()
    evaluator = workflow.parser.get_parsed_content("evaluator")
    assert isinstance(evaluator.inferer, AutocastInferer)
    linear = next(m for m in evaluator.network.modules() if isinstance(m, torch.nn.Linear))
    assert linear.weight.dtype == torch.bfloat16
    workflow.run()
    workflow.finalize()
    for name in ("a", "b"):
        mask = np.asarray(Image.open(out / f"{name}.png"))
        assert mask.shape == (70, 90) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
