"""bundles/openus_seg: configs and ids, label-ratio subsets, train -> evaluate -> infer through
``python -m monai.bundle run`` (tiny encoder, demo data), input formats, mask checks, and BUSI when present.

The commands below are the ones bundles/openus_seg/docs/README.md shows (plus temporary output folders).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from _helpers import demo_dataset, scratch_outputs

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "openus_seg"
CONFIGS = BUNDLE / "configs"
BUSI = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi"

TRAIN = "['configs/train.json','configs/tiny.json']"
EVALUATE = "['configs/train.json','configs/tiny.json','configs/evaluate.json']"
INFER = "['configs/inference.json','configs/tiny.json']"
META = ["--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf"]



def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _bundle_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "monai.bundle", *args]


def _check(proc: subprocess.CompletedProcess | subprocess.Popen, out: str) -> None:
    assert proc.returncode == 0, f"bundle run failed:\n{out[-4000:]}"


def _parser(files: list[str], scratch: bool = True, **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in files])
    for k, v in (scratch_outputs(overrides) if scratch else overrides).items():  # scratch: outputs in a temp folder
        parser[k] = v
    return parser


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Foreground Dice; 1 when both masks are empty (the bundle's convention, MONAI's ignore_empty=False)."""
    p, r = pred > 0, ref > 0
    denom = p.sum() + r.sum()
    return 1.0 if denom == 0 else 2.0 * float((p & r).sum()) / float(denom)


def _check_dice_from_masks(eval_dir: Path) -> None:
    """evaluate's Dice (per image and mean) equals Dice computed here from the masks it wrote."""
    summary = json.loads((eval_dir / "metrics.json").read_text())
    rows = list(csv.DictReader(open(eval_dir / "metrics.csv")))
    assert summary["n_images"] == len(rows) > 0
    ours = []
    for row in rows:
        written = np.asarray(Image.open(eval_dir / "masks" / Path(row["image"]).name))
        reference = np.asarray(Image.open(row["label"]))
        assert written.shape == reference.shape[:2] and written.dtype == np.uint8
        ours.append(_dice(written, reference))
        assert float(row["dice"]) == pytest.approx(ours[-1], abs=1e-5), row["image"]
    assert summary["dice"] == pytest.approx(float(np.mean(ours)), abs=1e-5)


# ----------------------------------------------------------------------------- configs
def test_metadata_ids_and_license():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["num_channels"] == 1 and fmt["outputs"]["pred"]["num_channels"] == 2
    assert fmt["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "lesion"}
    assert "openus-monai" in meta["required_packages_version"]
    train = _parser(["train.json"])
    for key in ("bundle_root", "dataset_dir", "ckpt_dir", "output_dir", "network_def", "network", "train#trainer",
                "train#dataset#data", "train#handlers", "validate#evaluator", "validate#handlers", "initialize", "run",
                "training", "seed", "label_ratio", "pretrained", "encoder", "freeze_encoder", "max_epochs", "batch_size",
                "num_workers", "device"):
        assert key in train, key
    infer = _parser(["inference.json"])
    for key in ("bundle_root", "dataset_dir", "network_def", "network", "preprocessing", "postprocessing", "inferer",
                "dataset#data", "evaluator", "handlers", "initialize", "run", "load_pretrain"):
        assert key in infer, key
    assert (BUNDLE / "LICENSE").read_text() == (REPO / "LICENSE").read_text()
    assert (BUNDLE / "docs" / "README.md").is_file()
    assert not [p for p in BUNDLE.rglob("*.py")], "bundles hold configuration only"


def test_bundle_root_from_bundle_and_repo_root(monkeypatch):
    for cwd in (REPO, BUNDLE):
        monkeypatch.chdir(cwd)
        assert Path(_parser(["train.json"], scratch=False).get_parsed_content("bundle_root")) == BUNDLE
        assert Path(_parser(["inference.json"], scratch=False).get_parsed_content("ckpt_dir")) == BUNDLE / "models"


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    return demo_dataset(tmp_path_factory.mktemp("seg_demo"))


def _subsets(dataset_dir: Path, seed: int, ratios=(0.2, 0.4, 1.0)) -> dict[float, list[dict]]:
    return {r: _parser(["train.json"], dataset_dir=str(dataset_dir), seed=seed, label_ratio=r).get_parsed_content("train#dataset#data")
            for r in ratios}


def _check_label_ratio_subsets(dataset_dir: Path, class_of) -> None:
    subsets = _subsets(dataset_dir, seed=3)
    again = _subsets(dataset_dir, seed=3)
    names = {r: [e["image"] for e in s] for r, s in subsets.items()}
    assert names == {r: [e["image"] for e in s] for r, s in again.items()}, "not deterministic"
    assert set(names[0.2]) < set(names[0.4]) < set(names[1.0]), "not nested"
    full = Counter(class_of(p) for p in names[1.0])
    for r in (0.2, 0.4):
        counts = Counter(class_of(p) for p in names[r])
        assert counts == {c: max(1, int(np.ceil(r * n - 1e-9))) for c, n in full.items()}, f"not stratified at {r}"
    other = _subsets(dataset_dir, seed=4, ratios=(0.2,))
    assert [e["image"] for e in other[0.2]] != names[0.2], "the seed does not change the subset"
    assert all(Path(e["label"]).is_file() for e in subsets[0.2])


def test_label_ratio_subsets(demo_dir):
    _check_label_ratio_subsets(demo_dir, lambda p: Path(p).name.split("_")[0])


# ----------------------------------------------------------------------------- end to end
def test_train_evaluate_infer_through_monai_bundle(demo_dir, tmp_path):
    """Train (2 epochs, tiny) from the bundle folder, then evaluate (bundle folder) and infer (repo root) in
    parallel. One test, so that parallel test workers never repeat the training."""
    out = tmp_path
    common = ["--dataset_dir", str(demo_dir), "--ckpt_dir", str(out / "models")]
    train = subprocess.run(
        _bundle_cmd("run", "training", *META, "--config_file", TRAIN, *common, "--output_dir", str(out / "train")),
        cwd=BUNDLE, env=_env(), capture_output=True, text=True,
    )
    train_log = train.stdout + train.stderr
    _check(train, train_log)
    evaluate = subprocess.Popen(
        _bundle_cmd("run", *META, "--config_file", EVALUATE, *common, "--output_dir", str(out / "eval")),
        cwd=BUNDLE, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    infer = subprocess.Popen(
        _bundle_cmd("run", "--meta_file", "bundles/openus_seg/configs/metadata.json", "--logging_file",
                    "bundles/openus_seg/configs/logging.conf", "--config_file",
                    "['bundles/openus_seg/configs/inference.json','bundles/openus_seg/configs/tiny.json']",
                    *common, "--output_dir", str(out / "infer")),
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    for proc in (evaluate, infer):
        _check(proc, proc.communicate()[0])

    # training: the best model, two epochs with validation, TensorBoard logs
    saved = torch.load(out / "models" / "model.pt", map_location="cpu", weights_only=True)
    encoder = saved["network_config"]["args"]["encoder"]  # tiny.json's, as the built encoder's whole config
    assert encoder["depths"] == [1, 1, 1, 1] and encoder["dims"] == [16, 32, 64, 128]
    state = saved["model"]
    assert any(k.startswith("decoder.") for k in state) and any(k.startswith("encoder.") for k in state)
    assert "Epoch[2] Complete" in train_log and "val_mean_dice" in train_log
    assert list((out / "train").glob("events.out.tfevents.*")), "no TensorBoard log"

    # evaluation: per-image table and summary on the test split; Dice recomputed from the written masks
    test_rows = [r for r in csv.DictReader(open(demo_dir / "labels.csv")) if r["split"] == "test"]
    summary = json.loads((out / "eval" / "metrics.json").read_text())
    assert {"dice", "iou", "hd95", "n_images"} <= set(summary) and summary["n_images"] == len(test_rows)
    assert 0.0 <= summary["dice"] <= 1.0 and 0.0 <= summary["iou"] <= summary["dice"] + 1e-6
    _check_dice_from_masks(out / "eval")

    # inference: one mask per input, named after it, at its size, values in {0, 1}
    test_images = [demo_dir / r["image"] for r in test_rows]
    assert sorted(p.name for p in (out / "infer").glob("*.png")) == sorted(p.name for p in test_images)
    for image in test_images:
        mask = np.asarray(Image.open(out / "infer" / image.name))
        assert mask.dtype == np.uint8 and mask.shape == np.asarray(Image.open(image)).shape[:2]
        assert set(np.unique(mask)) <= {0, 1}
        assert np.array_equal(mask, np.asarray(Image.open(out / "eval" / "masks" / image.name)))  # same model, same maps


def _workflow(files: list[str], **overrides):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=[str(CONFIGS / f) for f in files], meta_file=str(CONFIGS / "metadata.json"),
                              workflow_type="train", **scratch_outputs(overrides))
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def test_inference_formats_keep_size_and_name(tmp_path):
    """PNG (non-square), JPEG (RGB), BMP, TIFF, NIfTI and DICOM in; one uint8 label map per input, same size
    (rows x columns as in the file) and name."""
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(rng.integers(0, 255, (70, 90), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(images / "b.jpg")
    Image.fromarray(rng.integers(0, 255, (50, 40), dtype=np.uint8)).save(images / "c.bmp")
    Image.fromarray(rng.integers(0, 255, (33, 47), dtype=np.uint8)).save(images / "d.tif")
    nib.save(nib.Nifti1Image(rng.random((45, 60)).astype(np.float32), np.eye(4)), images / "e.nii.gz")
    itk = pytest.importorskip("itk")
    itk.imwrite(itk.image_from_array(rng.integers(0, 3000, (36, 52)).astype(np.int16)), str(images / "f.dcm"))
    out = tmp_path / "out"
    _workflow(["inference.json", "tiny.json"], dataset_dir=str(images), output_dir=str(out), load_pretrain=False,
              num_workers=0, overlay=True)
    expect = {"a.png": (70, 90), "b.png": (64, 80), "c.png": (50, 40), "d.png": (33, 47), "f.png": (36, 52)}
    for name, shape in expect.items():
        mask = np.asarray(Image.open(out / name))
        assert mask.shape == shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}, name
    nii = nib.load(out / "e.nii.gz")
    assert nii.shape[:2] == (45, 60) and nii.get_data_dtype() == np.uint8
    assert (out / "a_overlay.png").is_file()


def test_pretrained_override_loads_exported_encoder_exactly(tmp_path):
    """--pretrained PATH: the bundle's network starts from exactly the exported encoder's weights."""
    from openus_monai.networks import VMamba

    torch.manual_seed(7)
    encoder = VMamba(depths=[1, 1, 1, 1], dims=16, in_channels=1)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(torch.randn_like(p))
    torch.save(encoder.state_dict(), tmp_path / "encoder.pt")  # the export format: a plain encoder state dict
    net = _parser(["train.json", "tiny.json"], pretrained=str(tmp_path / "encoder.pt")).get_parsed_content("network_def")
    loaded = net.encoder.state_dict()
    assert loaded.keys() == encoder.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in encoder.state_dict().items())
    fresh = _parser(["train.json", "tiny.json"]).get_parsed_content("network_def").encoder.state_dict()
    assert not torch.equal(fresh["patch_embed.0.weight"], loaded["patch_embed.0.weight"])


def test_inference_datalist_sources(tmp_path, demo_dir):
    from openus_monai.data import inference_datalist

    test_rows = [r for r in csv.DictReader(open(demo_dir / "labels.csv")) if r["split"] == "test"]
    assert [e["image"] for e in inference_datalist(demo_dir)] == [str(demo_dir / r["image"]) for r in test_rows]
    assert len(inference_datalist(demo_dir, split="all")) == sum(1 for _ in csv.DictReader(open(demo_dir / "labels.csv")))
    datalist = tmp_path / "list.json"
    first, second = (str(demo_dir / r["image"]) for r in test_rows[:2])
    datalist.write_text(json.dumps({"training": [{"image": first}], "test": [second]}))
    assert inference_datalist(datalist) == [{"image": second}]
    assert len(inference_datalist(datalist, split="all")) == 2
    assert inference_datalist(demo_dir / test_rows[0]["image"]) == [{"image": str(demo_dir / test_rows[0]["image"])}]
    with pytest.raises(FileNotFoundError):
        inference_datalist(tmp_path / "missing")
    with pytest.raises(ValueError, match="split"):
        inference_datalist(demo_dir, split="val")


def test_bad_mask_stops_training_naming_both_files(tmp_path):
    from openus_monai.data import synthesize_dataset

    synthesize_dataset(tmp_path, n=6, size=64)
    rows = [r for r in csv.DictReader(open(tmp_path / "labels.csv")) if r["split"] == "train"]
    bad = tmp_path / rows[0]["mask"]
    Image.fromarray(np.zeros((64, 50), np.uint8)).save(bad)
    parser = _parser(["train.json", "tiny.json"], dataset_dir=str(tmp_path), val_fraction=0.0, max_train_images=None)
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("train#dataset")  # CacheDataset reads every training pair up front
    text = "\n".join(str(e) for e in _chain(info.value))
    assert str(bad) in text and str(tmp_path / rows[0]["image"]) in text and "size" in text


def _chain(err):
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def test_early_stop_option(demo_dir):
    parser = _parser(["train.json", "tiny.json"], dataset_dir=str(demo_dir), early_stop_patience=3)
    handler = parser.get_parsed_content("early_stop")
    assert handler.patience == 3 and handler._handler is not None
    assert "early_stop.attach" in " ".join(parser["run"]) and parser["training"] == parser["run"]


# ----------------------------------------------------------------------------- BUSI
busi = pytest.mark.skipif(not (BUSI / "labels.csv").is_file(), reason=f"BUSI not found at {BUSI} (optional real data)")


@busi
def test_busi_label_ratio_subsets():
    classes = {str(BUSI / r["image"]): r["label"] for r in csv.DictReader(open(BUSI / "labels.csv"))}
    _check_label_ratio_subsets(BUSI, lambda p: classes[os.path.normpath(p)])


@busi
def test_busi_short_run_reads_every_file_and_dice_matches(tmp_path):
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose

    # every image and mask through the bundle's own loading and checking transforms
    parser = _parser(["train.json", "tiny.json", "evaluate.json"], dataset_dir=str(BUSI))
    datalist = parser.get_parsed_content("datalist")
    entries = datalist["training"] + datalist["validation"] + datalist["test"]
    n_rows = sum(1 for _ in csv.DictReader(open(BUSI / "labels.csv")))
    assert len(entries) == n_rows == len({e["image"] for e in entries})
    load_and_check = parser.get_parsed_content("validate#preprocessing").transforms[:3]  # LoadImaged, gray, mask check
    assert [type(t).__name__ for t in load_and_check] == ["LoadImaged", "EnsureGray2Dd", "CheckSegPaird"]
    loader = DataLoader(Dataset(entries, Compose(load_and_check)), batch_size=1, num_workers=2)
    seen = 0
    for batch in loader:
        assert batch["image"].shape[2:] == batch["label"].shape[2:] and batch["label"].max() <= 1
        seen += 1
    assert seen == n_rows

    # a short training run and an evaluation on a spread of the test split (every 13th: all classes)
    common = {"dataset_dir": str(BUSI), "ckpt_dir": str(tmp_path / "models"), "num_workers": 0}
    _workflow(["train.json", "tiny.json"], **common, output_dir=str(tmp_path / "train"), max_epochs=1, epoch_length=2,
              cache_rate=0.0, **{"validate#dataset#data": "$@datalist['validation'][:8]"})
    assert (tmp_path / "models" / "model.pt").is_file()
    _workflow(["train.json", "tiny.json", "evaluate.json"], **common, output_dir=str(tmp_path / "eval"),
              **{"validate#dataset#data": "$openus_monai.data.labeled(@datalist['test'])[::13]"})
    _check_dice_from_masks(tmp_path / "eval")
    rows = list(csv.DictReader(open(tmp_path / "eval" / "metrics.csv")))
    assert {Path(r["image"]).name.split("_")[0].split(" ")[0] for r in rows} >= {"benign", "malignant", "normal"}
