"""Model-zoo readiness of the three bundles, checked the way the MONAI model zoo's CI checks its bundles.

- ``metadata.json`` passes ``verify_metadata`` against the schema vendored in the package, offline;
  ``version`` is semver and has a ``changelog`` entry; every config file is 4-space JSON.
- ``verify_net_in_out`` for the segmentation and classification networks.
- Each bundle as a ``monai.bundle.ConfigWorkflow``: ``workflow_type="train"`` (and ``"infer"`` with
  ``inference.json`` on the model the train workflow wrote), ``initialize`` -> ``check_properties`` (no
  missing or mis-referenced property of MONAI's ``TrainProperties`` / ``InferProperties`` /
  ``MetaProperties``) -> ``run`` -> ``finalize``, tiny settings, temporary folders.
- Trained models are not committed: git tracks nothing under ``bundles/*/models`` or ``bundles/*/eval``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _helpers import REPO, SHARED, scratch_outputs

BUNDLES = ("openus_pretrain", "openus_seg", "openus_cls")
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
DOC_SECTIONS = ("Overview", "Data", "Training", "Evaluation", "Inference", "Export", "MONAI Label", "Performance",
                "References", "License", "Security")


def configs(bundle: str) -> Path:
    return REPO / "bundles" / bundle / "configs"


# ----------------------------------------------------------------------------- metadata and conventions
def test_vendored_schema_is_monais():
    from openus_monai.bundle import SCHEMA_MD5, schema_path

    path = Path(schema_path())
    assert hashlib.md5(path.read_bytes()).hexdigest() == SCHEMA_MD5
    assert path.name == "meta_schema_20240725.json"
    shared = SHARED / "schemas" / path.name
    if shared.is_file():  # the project's reference copy of MONAI's file, when it is beside the checkout
        assert path.read_bytes() == shared.read_bytes()


@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_metadata_offline(bundle, monkeypatch, tmp_path):
    """``monai.bundle.verify_metadata`` with ``filepath`` = the vendored schema: validates without a download."""
    import monai.apps.utils
    from monai.bundle import verify_metadata

    from openus_monai.bundle import SCHEMA_MD5, schema_path

    def no_download(*args, **kwargs):
        raise AssertionError(f"verify_metadata tried to download {args}")

    monkeypatch.setattr(monai.apps.utils, "_download_with_progress", no_download)
    meta_file = configs(bundle) / "metadata.json"
    verify_metadata(meta_file=str(meta_file), filepath=schema_path(), hash_val=SCHEMA_MD5)

    meta = json.loads(meta_file.read_text())
    assert meta["schema"].endswith("/" + Path(schema_path()).name)
    assert "openus-monai" in meta["required_packages_version"]
    broken = tmp_path / "metadata.json"  # the check can fail: a required key missing
    broken.write_text(json.dumps({k: v for k, v in meta.items() if k != "network_data_format"}))
    with pytest.raises(ValueError, match="network_data_format"):
        verify_metadata(meta_file=str(broken), filepath=schema_path(), hash_val=SCHEMA_MD5)


def test_verify_metadata_command_line():
    """The documented command, as a user types it (one bundle: the other two take the same path in-process)."""
    from openus_monai.bundle import SCHEMA_MD5, schema_path

    cmd = [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", "configs/metadata.json",
           "--filepath", schema_path(), "--hash_val", SCHEMA_MD5]
    proc = subprocess.run(cmd, cwd=REPO / "bundles" / "openus_seg", capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "skipped downloading" in out and "metadata is verified with no error" in out


@pytest.mark.parametrize("bundle", BUNDLES)
def test_version_and_changelog(bundle):
    meta = json.loads((configs(bundle) / "metadata.json").read_text())
    assert SEMVER.match(meta["version"]), meta["version"]
    assert meta["version"] in meta["changelog"], "the current version needs a changelog entry"
    versions = [tuple(int(p) for p in SEMVER.match(v).groups()) for v in meta["changelog"]]
    assert max(versions) == tuple(int(p) for p in meta["version"].split(".")), "version is not the newest changelog entry"
    assert all(isinstance(text, str) and text for text in meta["changelog"].values())


@pytest.mark.parametrize("bundle", BUNDLES)
def test_configs_are_4_space_json(bundle):
    for path in sorted(configs(bundle).glob("*.json")):
        text = path.read_text(encoding="utf-8")
        expected = json.dumps(json.loads(text), indent=4) + "\n"
        assert text == expected, (f"{path} is not in the bundles' JSON form (json.dumps(..., indent=4) + newline); "
                                  f"rewrite it with: python -c \"import json,sys; p=sys.argv[1]; d=json.load(open(p)); "
                                  f"open(p,'w').write(json.dumps(d, indent=4) + '\\n')\" {path}")


def test_trained_models_are_not_tracked():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files", "bundles"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert tracked, "git ls-files found no bundle files"
    assert not [p for p in tracked if p.split("/")[2:3] in (["models"], ["eval"])]
    for bundle in BUNDLES:
        for path in (f"bundles/{bundle}/models/model.pt", f"bundles/{bundle}/eval/metrics.json"):
            assert subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0, f"{path} is not ignored"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_docs_follow_the_model_zoo_template(bundle):
    text = (REPO / "bundles" / bundle / "docs" / "README.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+?)\s*$", text, flags=re.M)
    missing = [s for s in DOC_SECTIONS if s not in headings]
    assert not missing, f"docs/README.md lacks the sections {missing}"
    assert (REPO / "bundles" / bundle / "LICENSE").read_text() == (REPO / "LICENSE").read_text()


@pytest.mark.parametrize("bundle,files", [("openus_seg", ["inference.json", "tiny.json"]),
                                          ("openus_cls", ["train.json", "tiny.json"])])
def test_verify_net_in_out(bundle, files):
    """The network's input and output channels and spatial shapes match ``network_data_format``
    (``n=2``: a 64 x 64 input). ``num_classes`` given, so that the classifier needs no data set."""
    from monai.bundle import verify_net_in_out

    overrides = {"num_classes": 3} if bundle == "openus_cls" else {}
    verify_net_in_out(net_id="network_def", meta_file=str(configs(bundle) / "metadata.json"),
                      config_file=[str(configs(bundle) / f) for f in files], device="cpu", n=2, **overrides)


# ----------------------------------------------------------------------------- workflows
@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    """A small labelled data set (generated phantoms, 64 px) that the bundles read as user data: without the
    generator's manifest, so that no bundle regenerates it at its own demo size."""
    from openus_monai.data import synthesize_dataset

    root = tmp_path_factory.mktemp("zoo_data")
    synthesize_dataset(root, n=24, seed=0, size=64)
    (root / "synthesis.json").unlink()
    return root


def zoo_workflow(bundle: str, files: list[str], workflow_type: str, **overrides):
    """``ConfigWorkflow`` -> ``initialize`` -> ``check_properties`` (nothing missing) -> ``run`` -> ``finalize``."""
    from monai.bundle import ConfigWorkflow

    folder = configs(bundle)
    workflow = ConfigWorkflow(config_file=[str(folder / f) for f in files], meta_file=str(folder / "metadata.json"),
                              logging_file=str(folder / "logging.conf"), workflow_type=workflow_type, **scratch_outputs(overrides))
    workflow.initialize()
    assert workflow.check_properties() == [], f"{bundle} {workflow_type}: missing or wrongly referenced properties"
    workflow.run()
    workflow.finalize()
    return workflow


def same_state(state: dict, module: torch.nn.Module) -> bool:
    ours = module.state_dict()
    return set(state) == set(ours) and all(torch.equal(state[k].cpu(), ours[k].cpu()) for k in state)


def test_pretrain_train_workflow(dataset_dir, tmp_path):
    models = tmp_path / "models"
    workflow = zoo_workflow("openus_pretrain", ["train.json", "tiny.json"], "train", dataset_dir=str(dataset_dir),
                            ckpt_dir=str(models), output_dir=str(tmp_path / "eval"), max_epochs=1, batch_size=8)
    assert workflow.trainer.state.iteration == 3  # 24 images, batch 8
    backbone = torch.load(models / "backbone.pt", weights_only=True)["state_dict"]  # a self-describing encoder file
    assert same_state(backbone, workflow.parser.get_parsed_content("network").teacher.encoder)
    assert (models / "pretrain_final.pt").is_file()


@pytest.mark.parametrize("bundle", ["openus_seg", "openus_cls"])
def test_train_then_infer_workflows(bundle, dataset_dir, tmp_path):
    from openus_monai.data import build_datalist

    models = tmp_path / "models"
    common = {"dataset_dir": str(dataset_dir), "ckpt_dir": str(models)}
    train = zoo_workflow(bundle, ["train.json", "tiny.json"], "train", output_dir=str(tmp_path / "train"),
                         max_epochs=1, **common)
    assert train.trainer.state.epoch == 1
    checkpoint = torch.load(models / "model.pt", weights_only=True)
    state = checkpoint["model"]  # both bundles: {"model", "network_config"(, "class_names")}

    out = tmp_path / "infer"
    infer = zoo_workflow(bundle, ["inference.json", "tiny.json"], "infer", output_dir=str(out), **common)
    assert same_state(state, infer.network_def), "inference did not run the trained model"
    task = "segmentation" if bundle == "openus_seg" else "classification"
    test_images = [Path(e["image"]) for e in build_datalist(dataset_dir, task)["test"]]
    assert len(test_images) >= 3
    if bundle == "openus_seg":
        for image in test_images:
            mask = np.asarray(Image.open(out / image.name))
            assert mask.shape == np.asarray(Image.open(image)).shape[:2] and set(np.unique(mask)) <= {0, 1}
    else:
        rows = (out / "predictions.csv").read_text().splitlines()
        assert rows[0].split(",")[:2] == ["image", "prediction"]
        assert [Path(r.split(",")[0]).name for r in rows[1:]] == [p.name for p in test_images]
