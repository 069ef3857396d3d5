"""Bad input never reaches the model: the validator per kind of fault (tests/fault_corpus.py), the checked
dataset, and every bundle (pretrain train, seg train + inference, cls train + inference) run on good demo
images mixed with the corpus: without ``skip_invalid`` the run stops before training with one error naming
the bad files; with it the run completes, the report lists exactly the bad files, and the model sees
exactly the good ones.
"""

from __future__ import annotations

import csv
import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import scratch_outputs
from fault_corpus import write_fault_corpus
from monai.transforms import Compose, LoadImaged

from openus_monai.data import (
    CheckedCacheDataset,
    InvalidDataError,
    InvalidFiles,
    InvalidImageError,
    check_image,
    check_pair,
    image_readers,
    synthesize_dataset,
    validate_datalist,
)
from openus_monai.data.validation import find_invalid
from openus_monai.transforms import CheckSegPaird, EnsureGray2Dd

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("fault_corpus")
    return root, write_fault_corpus(root)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    synthesize_dataset(root, n=6, size=64)
    return root


def _load_chain() -> Compose:
    """The seg bundle's loading and checking transforms."""
    load = LoadImaged(["image", "label"], reader=image_readers(), image_only=True, ensure_channel_first=True,
                      allow_missing_keys=True)
    return Compose([load, EnsureGray2Dd("image"), CheckSegPaird("image", "label", num_classes=2)])


def _chain(err: BaseException):
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def _text(err: BaseException) -> str:
    return "\n".join(str(e) for e in _chain(err))


def _bad(entries: list[dict], root: Path, pair: bool, stages=("header", "load")) -> dict[str, str]:
    """{file an error must name: phrase of its reason} for the corpus entries invalid in this use."""
    out = {}
    for e in entries:
        invalid = not (e["pair_valid"] if pair else e["image_valid"])
        if invalid and e["stage"] in stages and (pair or e["named"] == "image"):
            out[str(root / e[e["named"]])] = e["reason"]
    return out


# ----------------------------------------------------------------------------------------- validator


def test_corpus_has_every_kind(corpus):
    root, entries = corpus
    assert len(entries) >= 12 and len({e["kind"] for e in entries}) == len(entries)
    assert (root / "manifest.json").is_file() and json.loads((root / "manifest.json").read_text()) == entries
    assert (root / "images" / "huge.png").stat().st_size < 1000, "the 20000x20000 PNG must be tiny on disk"


def test_validator_and_load_chain_per_kind(corpus):
    """Each kind: refused from the header, or refused at load time, naming the right file and the problem;
    the valid unusual files read to exactly the expected gray values."""
    root, entries = corpus
    chain = _load_chain()
    for e in entries:
        image, mask = str(root / e["image"]), str(root / e["mask"])
        named = str(root / e[e["named"]])
        if e["stage"] == "header":
            with pytest.raises(InvalidImageError) as info:
                check_pair(image, mask)
            assert info.value.path == named and e["reason"] in info.value.reason, (e["kind"], str(info.value))
            continue
        check_pair(image, mask)  # the header is fine
        if e["stage"] == "load":
            with pytest.raises(Exception) as info:
                chain({"image": image, "label": mask})
            err = find_invalid(info.value)
            assert err is not None and err.path == named and e["reason"] in err.reason, (e["kind"], _text(info.value))
            continue
        out = chain({"image": image, "label": mask})
        gray = out["image"]
        assert gray.shape == (1, 40, 48) and gray.dtype == torch.float32, e["kind"]
        expected = np.load(root / e["expected"])
        np.testing.assert_allclose(gray[0].numpy(), expected, atol=1e-3, err_msg=e["kind"])
        assert float(gray.std()) > 1.0, f"{e['kind']}: read as a constant"
    by_kind = {e["kind"]: e for e in entries}
    gray16 = np.load(root / by_kind["16-bit PNG"]["expected"])
    assert gray16.max() > 60000 and np.any(gray16 % 256 != 0), "the 16-bit test image must use all 16 bits"
    palette = np.load(root / by_kind["palette PNG"]["expected"])
    assert palette.max() > 100, "palette values must be the colours, not the indices 0..3"


def test_huge_image_refused_from_header_without_decoding(corpus):
    root, _ = corpus
    huge = str(root / "images" / "huge.png")
    tracemalloc.start()
    try:
        with pytest.raises(InvalidImageError, match="too large"):
            check_image(huge)
        with pytest.raises(Exception) as info:
            LoadImaged("image", reader=image_readers(), image_only=True)({"image": huge})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert find_invalid(info.value) is not None and "too large" in find_invalid(info.value).reason
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MiB allocated: the 400-megapixel image was decoded"


def test_validate_datalist_lists_all_then_skips_and_reports(corpus, tmp_path):
    root, entries = corpus
    datalist = {"training": [{"image": str(root / e["image"]), "label": str(root / e["mask"])} for e in entries],
                "classes": ["a"]}
    header_bad = _bad(entries, root, pair=True, stages=("header",))
    with pytest.raises(InvalidDataError) as info:
        validate_datalist(datalist, InvalidFiles(skip=False), pair=("image", "label"))
    message = str(info.value)
    assert f"{len(header_bad)} invalid input file(s)" in message and "skip_invalid" in message
    for path, reason in header_bad.items():
        assert f"{path}: " in message and reason in message.split(f"{path}: ")[1].splitlines()[0], path
    assert not InvalidFiles(skip="false").skip and InvalidFiles(skip="true").skip  # as the command line gives them
    policy = InvalidFiles(skip=True, output_dir=tmp_path)
    kept = validate_datalist(datalist, policy, pair=("image", "label"))
    assert kept["classes"] == ["a"] and len(kept["training"]) == len(entries) - len(header_bad)
    report = json.loads((tmp_path / "skipped_files.json").read_text())
    assert report["n_skipped"] == len(header_bad)
    assert {r["path"]: r["reason"] for r in report["files"]}.keys() == header_bad.keys()
    rows = list(csv.DictReader(open(tmp_path / "skipped_files.csv")))
    assert {r["path"] for r in rows} == set(header_bad) and all(r["stage"] == "datalist" for r in rows)


def test_checked_cache_dataset_at_load_time(corpus, tmp_path):
    """What only decoding shows: one error listing all (cached), or dropped and reported; items not cached
    (DataLoader workers) stop with the file named, or are replaced and reported from the worker."""
    root, entries = corpus
    load_bad = [e for e in entries if e["stage"] == "load"]
    good = [e for e in entries if e["pair_valid"]]
    data = [{"image": str(root / e["image"]), "label": str(root / e["mask"])} for e in load_bad + good]
    named = {str(root / e[e["named"]]) for e in load_bad}
    with pytest.raises(InvalidDataError) as info:
        CheckedCacheDataset(data, _load_chain(), progress=False)
    assert all(p in str(info.value) for p in named)
    ds = CheckedCacheDataset(data, _load_chain(), InvalidFiles(skip=True, output_dir=tmp_path / "cached"), progress=False)
    assert len(ds) == len(good) and [d["image"] for d in ds.data] == [d["image"] for d in data[len(load_bad):]]
    assert {r["path"] for r in json.loads((tmp_path / "cached" / "skipped_files.json").read_text())["files"]} == named

    first_bad = str(root / load_bad[0]["image"])
    uncached = CheckedCacheDataset(data, _load_chain(), cache_rate=0.0, progress=False)
    with pytest.raises(InvalidImageError) as info:
        uncached[0]
    assert info.value.path == first_bad
    policy = InvalidFiles(skip=True, output_dir=tmp_path / "workers")
    uncached = CheckedCacheDataset(data, _load_chain(), policy, cache_rate=0.0, progress=False)
    loader = torch.utils.data.DataLoader(uncached, batch_size=1, num_workers=1, collate_fn=lambda b: b)
    seen = [item[0]["image"].meta["filename_or_obj"] for item in loader]
    assert len(seen) == len(data) and not set(seen) & {str(root / e["image"]) for e in load_bad}
    policy.completed()
    assert {r["path"] for r in json.loads((tmp_path / "workers" / "skipped_files.json").read_text())["files"]} == named


# --------------------------------------------------------------------------------------------- bundles


def _workflow(bundle: str, files: list[str], **overrides):
    from monai.bundle import ConfigWorkflow

    configs = BUNDLES / bundle / "configs"
    workflow = ConfigWorkflow(config_file=[str(configs / f) for f in files], meta_file=str(configs / "metadata.json"),
                              logging_file=False, workflow_type="train", **scratch_outputs(overrides))
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def _expect_stop(bundle: str, files: list[str], bad: dict[str, str], ckpt_dir: Path, **overrides) -> None:
    with pytest.raises(Exception) as info:
        _workflow(bundle, files, skip_invalid=False, ckpt_dir=str(ckpt_dir), **overrides)
    errors = [e for e in _chain(info.value) if isinstance(e, InvalidDataError)]
    assert errors, _text(info.value)[-3000:]
    message = str(errors[0])
    for path, reason in bad.items():
        assert f"{path}: " in message and reason in message.split(f"{path}: ")[1].splitlines()[0], (path, message)
    assert not list(ckpt_dir.glob("*.pt")), "training started"


def _report(output_dir: Path) -> dict[str, str]:
    return {r["path"]: r["reason"] for r in json.loads((output_dir / "skipped_files.json").read_text())["files"]}


def _check_report(output_dir: Path, bad: dict[str, str]) -> None:
    report = _report(output_dir)
    assert report.keys() == bad.keys(), sorted(set(report) ^ set(bad))
    for path, reason in bad.items():
        assert reason in report[path], (path, report[path])


def _corpus_images(root: Path, entries: list[dict], exclude=("path that does not exist",)) -> list[dict]:
    return [e for e in entries if e["kind"] not in exclude]


def test_pretrain_bundle(corpus, demo, tmp_path):
    root, entries = corpus
    data = tmp_path / "unlabeled"
    shutil.copytree(demo / "images", data / "demo")
    shutil.copytree(root / "images", data / "corpus")  # a folder scan: the missing path cannot occur
    scanned = [e for e in entries if (root / e["image"]).is_file()]  # a scan lists files only
    bad = {str(data / "corpus" / Path(e["image"]).name): e for e in scanned if not e["image_valid"]}
    common = {"dataset_dir": str(data), "max_epochs": 1, "num_workers": 0}
    _expect_stop("openus_pretrain", ["train.json", "tiny.json"],
                 {p: e["reason"] for p, e in bad.items() if e["stage"] == "header"}, tmp_path / "stop",
                 output_dir=str(tmp_path / "stop_out"), **common)
    bad = {p: e["reason"] for p, e in bad.items()}
    out = tmp_path / "out"
    workflow = _workflow("openus_pretrain", ["train.json", "tiny.json"], skip_invalid=True,
                         ckpt_dir=str(tmp_path / "models"), output_dir=str(out), **common)
    n_good = len(list((demo / "images").iterdir())) + sum(e["image_valid"] for e in scanned)
    dataset = workflow.parser.get_parsed_content("train#dataset")
    assert len(dataset) == n_good and workflow.parser.get_parsed_content("train#trainer").state.iteration > 0
    _check_report(out, bad)


def _seg_csv(folder: Path, demo: Path, root: Path, entries: list[dict]) -> Path:
    rows = list(csv.DictReader(open(demo / "labels.csv")))
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "mask", "label", "split"])
        for i, r in enumerate(rows):
            writer.writerow([str(demo / r["image"]), str(demo / r["mask"]), r["label"], "val" if i < 2 else "train"])
        for e in _corpus_images(root, entries):
            writer.writerow([str(root / e["image"]), str(root / e["mask"]), "benign", "train"])
    return folder


def test_seg_bundle_train_and_inference(corpus, demo, tmp_path):
    root, entries = corpus
    kept = _corpus_images(root, entries)
    data = _seg_csv(tmp_path, demo, root, entries)
    bad = _bad(kept, root, pair=True)
    common = {"dataset_dir": str(data), "max_epochs": 1, "max_train_images": None, "num_workers": 0}
    _expect_stop("openus_seg", ["train.json", "tiny.json"], _bad(kept, root, pair=True, stages=("header",)),
                 tmp_path / "stop", output_dir=str(tmp_path / "stop_out"), **common)
    out = tmp_path / "train"
    workflow = _workflow("openus_seg", ["train.json", "tiny.json"], skip_invalid=True, ckpt_dir=str(tmp_path / "models"),
                         output_dir=str(out), **common)
    n_good = 4 + sum(e["pair_valid"] for e in kept)  # 4 demo training pairs
    assert len(workflow.parser.get_parsed_content("train#dataset")) == n_good
    _check_report(out, bad)
    assert (tmp_path / "models" / "model.pt").is_file()

    # inference on a datalist listing good images and every corpus image (the missing path too)
    demo_images = sorted((demo / "images").iterdir())[:2]
    listed = tmp_path / "infer.json"
    listed.write_text(json.dumps({"training": [], "test": [str(p) for p in demo_images] + [str(root / e["image"]) for e in entries]}))
    bad = _bad(entries, root, pair=False)
    infer = {"dataset_dir": str(listed), "load_pretrain": False, "num_workers": 0}
    _expect_stop("openus_seg", ["inference.json", "tiny.json"], _bad(entries, root, pair=False, stages=("header",)),
                 tmp_path / "stop_infer", output_dir=str(tmp_path / "stop_infer_out"), **infer)
    assert not list((tmp_path / "stop_infer_out").glob("*.png")) if (tmp_path / "stop_infer_out").exists() else True
    out = tmp_path / "infer"
    _workflow("openus_seg", ["inference.json", "tiny.json"], skip_invalid=True, output_dir=str(out), **infer)
    good = [p.name for p in demo_images] + [Path(e["image"]).name for e in entries if e["image_valid"]]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(Path(n).name for n in good)
    _check_report(out, bad)


def _cls_csv(folder: Path, demo: Path, root: Path, entries: list[dict]) -> Path:
    rows = list(csv.DictReader(open(demo / "labels.csv")))
    first_of_class: set[str] = set()
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label", "split"])
        for r in rows:  # one image per class validates, the other trains
            split = "train" if r["label"] in first_of_class else "val"
            first_of_class.add(r["label"])
            writer.writerow([str(demo / r["image"]), r["label"], split])
        for e in _corpus_images(root, entries):
            writer.writerow([str(root / e["image"]), "benign", "train"])
    return folder


def test_cls_bundle_train_and_inference(corpus, demo, tmp_path):
    root, entries = corpus
    kept = _corpus_images(root, entries)
    data = _cls_csv(tmp_path, demo, root, entries)
    bad = _bad(kept, root, pair=False)
    common = {"dataset_dir": str(data), "max_epochs": 1, "num_workers": 0}
    _expect_stop("openus_cls", ["train.json", "tiny.json"], _bad(kept, root, pair=False, stages=("header",)),
                 tmp_path / "stop", output_dir=str(tmp_path / "stop_out"), **common)
    out = tmp_path / "train"
    models = tmp_path / "models"
    workflow = _workflow("openus_cls", ["train.json", "tiny.json"], skip_invalid=True, ckpt_dir=str(models),
                         output_dir=str(out), **common)
    n_good = 3 + sum(e["image_valid"] for e in kept)  # 3 demo training images
    assert len(workflow.parser.get_parsed_content("train#dataset")) == n_good
    _check_report(out, bad)

    # inference on a plain folder: two demo images and the corpus images
    folder = tmp_path / "clinic"
    folder.mkdir()
    for p in sorted((demo / "images").iterdir())[:2]:
        shutil.copy(p, folder / p.name)
    for e in entries:
        src = root / e["image"]
        if src.is_dir():
            (folder / src.name).mkdir()
        elif src.is_file():
            shutil.copy(src, folder / src.name)
    scanned = [e for e in entries if (root / e["image"]).is_file()]  # a scan lists files only
    bad = {str(folder / Path(e["image"]).name): e["reason"] for e in scanned if not e["image_valid"]}
    infer = {"dataset_dir": str(folder), "ckpt_dir": str(models), "num_workers": 0}
    with pytest.raises(Exception) as info:
        _workflow("openus_cls", ["inference.json", "tiny.json"], skip_invalid=False, output_dir=str(tmp_path / "x"), **infer)
    header_bad = {str(folder / Path(e["image"]).name) for e in scanned if not e["image_valid"] and e["stage"] == "header"}
    assert all(p in _text(info.value) for p in header_bad)
    assert not (tmp_path / "x" / "predictions.csv").exists()
    out = tmp_path / "infer"
    _workflow("openus_cls", ["inference.json", "tiny.json"], skip_invalid=True, output_dir=str(out), **infer)
    predicted = [r["image"] for r in csv.DictReader(open(out / "predictions.csv"))]
    good = {str(folder / p.name) for p in sorted((demo / "images").iterdir())[:2]}
    good |= {str(folder / Path(e["image"]).name) for e in scanned if e["image_valid"]}
    assert sorted(predicted) == sorted(good)
    _check_report(out, bad)
