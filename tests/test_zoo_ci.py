"""The MONAI model zoo's ``ci/verify_bundle.py -m full`` steps, offline, through MONAI's public API.

For each bundle, in a copy of the bundle folder (so nothing is written into the checkout), as the zoo's
GPU premerge does it:

1. necessary files (``configs/metadata.json``, ``LICENSE``) exist; the preferred ones
   (``configs/inference.json``, ``models/model.pt``) too, once the zoo's fake-weights step has written
   ``models/model.pt`` = the state dict of ``network_def`` built from ``configs/inference.json`` alone
   (no trained checkpoint, no data);
2. ``version`` is in ``changelog``;
3. ``verify_metadata`` against the vendored schema;
4. ``check_properties`` of the inference workflow (``ConfigWorkflow(workflow_type="infer")``);
5. ``verify_net_in_out`` with ``configs/inference.json``;
6. ``ckpt_export`` by scripting (``torch.jit.script``, not tracing) with ``models/model.pt``; the saved
   file loads and gives the eager network's outputs (1e-4) at two input sizes.

The zoo's step 0 (fetching ``large_files.yml``) has nothing to fetch here, and its ``pipenv install`` of the
metadata's versions is the environment these tests run in.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from _helpers import REPO

BUNDLES = ("openus_pretrain", "openus_seg", "openus_cls")
NECESSARY = ("configs/metadata.json", "LICENSE")
PREFERRED = ("configs/inference.json", "models/model.pt")


def bundle_copy(bundle: str, root: Path) -> Path:
    """The bundle folder as the zoo holds it: configs, docs and LICENSE, no trained models or outputs."""
    return Path(shutil.copytree(REPO / "bundles" / bundle, root / bundle, ignore=shutil.ignore_patterns("models", "eval")))


def inference_parser(bundle_path: Path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_path / "configs" / "inference.json"))
    parser.read_meta(str(bundle_path / "configs" / "metadata.json"))
    parser["bundle_root"] = str(bundle_path)
    return parser


def fake_weights(bundle_path: Path) -> dict[str, torch.Tensor]:
    """The zoo's fake-weights step: ``network_def`` from ``configs/inference.json``, its state dict saved
    (non-trivial values, so that a weight that does not load shows in the comparisons)."""
    torch.manual_seed(0)
    net = inference_parser(bundle_path).get_parsed_content("network_def")
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    (bundle_path / "models").mkdir()
    torch.save(net.state_dict(), bundle_path / "models" / "model.pt")
    return net.state_dict()


@pytest.mark.parametrize("bundle", BUNDLES)
def test_zoo_full_verification(bundle, tmp_path):
    from monai.bundle import ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out

    from openus_monai.bundle import SCHEMA_MD5, schema_path

    path = bundle_copy(bundle, tmp_path)
    meta_file, config_file = str(path / "configs" / "metadata.json"), str(path / "configs" / "inference.json")
    # 1. directory: necessary files, then the preferred ones once the fake weights exist
    assert [f for f in NECESSARY if not (path / f).is_file()] == []
    assert not (path / "models").exists()  # nothing trained travels with the bundle
    state = fake_weights(path)
    assert [f for f in PREFERRED if not (path / f).is_file()] == []
    # 2. version and changelog
    meta = json.loads((path / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    # 3. metadata format, offline
    verify_metadata(meta_file=meta_file, filepath=schema_path(), hash_val=SCHEMA_MD5)
    # 4. the inference workflow's properties
    workflow = ConfigWorkflow(config_file=config_file, meta_file=meta_file, logging_file=str(path / "configs" / "logging.conf"),
                              workflow_type="infer", bundle_root=str(path))
    workflow.initialize()
    assert workflow.check_properties() == [], f"{bundle}: missing or wrongly referenced inference properties"
    # 5. data shape
    verify_net_in_out(net_id="network_def", meta_file=meta_file, config_file=config_file, bundle_root=str(path), device="cpu")
    # 6. TorchScript by scripting, then load it
    ts_file = path / "models" / "verify_model.ts"
    ckpt_export(net_id="network_def", filepath=str(ts_file), ckpt_file=str(path / "models" / "model.pt"),
                meta_file=meta_file, config_file=config_file, bundle_root=str(path))
    scripted = torch.jit.load(str(ts_file), map_location="cpu")
    eager = inference_parser(path).get_parsed_content("network_def")
    eager.load_state_dict(state)
    eager.eval()
    out_channels = meta["network_data_format"]["outputs"]["pred"]["num_channels"]
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for size in (64, 96):  # two sizes: the scripted scan has no length baked in
            x = torch.rand(2, 1, size, size, generator=generator)
            expected, got = eager(x), scripted(x)
            assert got.shape == expected.shape and got.shape[1] == out_channels
            assert (got - expected).abs().max().item() <= 1e-4
        with pytest.raises(Exception, match="divisible by 32"):
            scripted(torch.rand(1, 1, 70, 64))
