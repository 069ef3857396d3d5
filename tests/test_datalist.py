"""build_datalist on every accepted layout, seeded splits, label-ratio subsets, errors, demo data, BUSI."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from openus_monai.data import (
    assign_splits,
    DatasetNotFoundError,
    build_datalist,
    ensure_demo_data,
    has_dataset,
    read_datalist_json,
    read_labels_csv,
    scan_class_folders,
    scan_image_folder,
    split_validation,
    subset_by_label_ratio,
)

BUSI = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi"
CLASSES = ("benign", "malignant", "normal")
COUNTS = {"benign": 20, "malignant": 12, "normal": 8}  # unbalanced on purpose


def _png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _make_csv_dataset(root: Path, with_split: bool = True, split_names=("train", "val", "test")) -> list[dict]:
    """COUNTS images per class with masks; with_split: 70/10/20 per class (split column)."""
    rows = []
    for label, n in COUNTS.items():
        splits = [split_names[0]] * n
        if with_split:
            n_test, n_val = round(0.2 * n), max(1, round(0.1 * n))
            splits = [split_names[2]] * n_test + [split_names[1]] * n_val + [split_names[0]] * (n - n_test - n_val)
        for i, split in enumerate(splits):
            name = f"{label}_{i}.png"
            _png(root / "images" / name)
            _png(root / "masks" / name)
            rows.append({"image": f"images/{name}", "mask": f"masks/{name}", "label": label, "split": split, "extra": "x"})
    _write_csv(root / "labels.csv", rows, ["image", "mask", "label", "split", "extra"] if with_split else ["image", "mask", "label", "extra"])
    return rows


def _class_counts(entries: list[dict]) -> dict[str, int]:
    return {c: sum(Path(e["image"]).name.startswith(c + "_") for e in entries) for c in CLASSES}


# ----------------------------------------------------------------------------- labels.csv
def test_labels_csv_with_split(tmp_path):
    rows = _make_csv_dataset(tmp_path)
    seg = build_datalist(tmp_path, "segmentation")
    n = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    assert (len(seg["training"]), len(seg["validation"]), len(seg["test"])) == (n["train"], n["val"], n["test"])
    for split in ("training", "validation", "test"):
        for e in seg[split]:
            assert set(e) == {"image", "label"}
            assert os.path.isabs(e["image"]) and os.path.isfile(e["image"]) and os.path.isfile(e["label"])
            assert Path(e["label"]).parent.name == "masks" and Path(e["label"]).name == Path(e["image"]).name
    cls = build_datalist(tmp_path, "classification")
    assert cls["classes"] == list(CLASSES)
    assert all(e["label"] == Path(e["image"]).name.split("_")[0] for e in cls["training"] + cls["test"])
    pre = build_datalist(tmp_path, "pretraining")
    assert len(pre["training"]) == len(rows) and pre["validation"] == pre["test"] == []
    assert all(set(e) == {"image"} for e in pre["training"])
    unmerged = build_datalist(tmp_path, "pretraining", merge_splits=False)
    assert len(unmerged["test"]) == n["test"]


def test_labels_csv_split_aliases(tmp_path):
    _make_csv_dataset(tmp_path, split_names=("Training", "validation", "TEST"))
    dl = build_datalist(tmp_path, "classification")
    assert len(dl["validation"]) == sum(max(1, round(0.1 * n)) for n in COUNTS.values())


def test_labels_csv_without_split_holds_out_stratified_validation(tmp_path):
    _make_csv_dataset(tmp_path, with_split=False)
    dl = build_datalist(tmp_path, "classification", seed=3)
    assert dl["test"] == []
    # 10% per class, rounded half up, at least one
    assert _class_counts(dl["validation"]) == {"benign": 2, "malignant": 1, "normal": 1}
    assert len(dl["training"]) + len(dl["validation"]) == sum(COUNTS.values())
    assert not {e["image"] for e in dl["training"]} & {e["image"] for e in dl["validation"]}
    assert build_datalist(tmp_path, "classification", seed=3) == dl  # seeded
    other = [build_datalist(tmp_path, "classification", seed=s)["validation"] for s in range(4, 8)]
    assert any(v != dl["validation"] for v in other)
    seg = build_datalist(tmp_path, "segmentation", seed=3)  # stratified by the label column too
    assert _class_counts(seg["validation"]) == {"benign": 2, "malignant": 1, "normal": 1}
    assert len(build_datalist(tmp_path, "segmentation", val_fraction=0.0)["validation"]) == 0


# ----------------------------------------------------------------------------- datalist.json
def test_datalist_json(tmp_path):
    for name in ("a", "b", "c", "d"):
        _png(tmp_path / "img" / f"{name}.png")
        _png(tmp_path / "seg" / f"{name}.png")
    _png(tmp_path / "benign" / "decoy.png")  # a folder named like a class must not become a path
    abs_d = str(tmp_path / "img" / "d.png")
    data = {
        "description": "ignored",
        "training": [
            {"image": "img/a.png", "label": "seg/a.png", "cls": "benign"},
            {"image": "img/b.png", "label": "seg/b.png"},
        ],
        "validation": [{"image": "img/c.png", "label": "seg/c.png"}],
        "test": [abs_d],  # Decathlon style: bare paths
    }
    (tmp_path / "datalist.json").write_text(json.dumps(data))
    (tmp_path / "labels.csv").write_text("image\nnot/used.png\n")  # datalist.json wins
    seg = build_datalist(tmp_path, "pretraining", merge_splits=False)
    assert [Path(e["image"]).name for e in seg["training"]] == ["a.png", "b.png"]
    assert seg["test"] == [{"image": abs_d}]
    seg = build_datalist(tmp_path, "segmentation")
    assert seg["training"][0] == {"image": str(tmp_path / "img" / "a.png"), "label": str(tmp_path / "seg" / "a.png")}
    assert len(seg["validation"]) == 1
    assert len(build_datalist(tmp_path, "pretraining")["training"]) == 4
    data = {
        "training": [{"image": "img/a.png", "label": "benign"}, {"image": "img/b.png", "label": "malignant"}],
        "validation": [{"image": "img/c.png", "label": "benign"}],
    }
    (tmp_path / "datalist.json").write_text(json.dumps(data))
    cls = build_datalist(tmp_path, "classification")
    assert cls["training"][0]["label"] == "benign" and cls["classes"] == ["benign", "malignant"]


def test_read_datalist_json_list_of_paths(tmp_path):
    for ch in ("t1", "t2"):
        _png(tmp_path / f"{ch}.png")
    (tmp_path / "d.json").write_text(json.dumps({"training": [{"image": ["t1.png", "t2.png"]}]}))
    out = read_datalist_json(tmp_path / "d.json", path_keys=("image",))
    assert out["training"][0]["image"] == [str(tmp_path / "t1.png"), str(tmp_path / "t2.png")]
    assert out["validation"] == out["test"] == []


# ----------------------------------------------------------------------------- folders
def test_class_folders(tmp_path):
    for label, n in COUNTS.items():
        for i in range(n):
            _png(tmp_path / label / f"{label}_{i}.png")
            _png(tmp_path / label / f"{label}_{i}_mask.png")  # BUSI-style masks next to images: skipped
    _png(tmp_path / "masks" / "x.png")  # mask folder: not a class
    dl = build_datalist(tmp_path, "classification", seed=0)
    assert dl["classes"] == list(CLASSES)
    assert len(dl["training"]) + len(dl["validation"]) == sum(COUNTS.values())
    assert _class_counts(dl["validation"]) == {"benign": 2, "malignant": 1, "normal": 1}
    assert all("_mask" not in e["image"] for e in dl["training"])
    with pytest.raises(FileNotFoundError, match="labels.csv"):
        build_datalist(tmp_path, "segmentation")  # folders do not make a segmentation data set


def test_class_folders_with_split_folders(tmp_path):
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        for label in ("cyst", "tumour"):
            for i in range(n):
                _png(tmp_path / split / label / f"{label}_{i}.jpg")
    dl = build_datalist(tmp_path, "classification")
    assert (len(dl["training"]), len(dl["validation"]), len(dl["test"])) == (10, 4, 6)
    assert dl["classes"] == ["cyst", "tumour"]
    assert {r["split"] for r in scan_class_folders(tmp_path)} == {"training", "validation", "test"}


def test_image_folder_for_pretraining(tmp_path):
    names = ["a.png", "sub/b.JPG", "sub/deep/c.jpeg", "d.bmp", "e.tif", "f.tiff", "g.nii", "h.nii.gz", "i.dcm"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    for skipped in ("notes.txt", "masks/m.png", ".hidden/k.png", "a_mask.png"):
        (tmp_path / skipped).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / skipped).write_bytes(b"x")
    found = scan_image_folder(tmp_path)
    assert sorted(os.path.relpath(e["image"], tmp_path) for e in found) == sorted(names)
    dl = build_datalist(tmp_path, "pretraining")
    assert len(dl["training"]) == len(names)
    with pytest.raises(FileNotFoundError, match="class-named sub-folders"):
        build_datalist(tmp_path / "sub" / "deep", "classification")


# ----------------------------------------------------------------------------- label_ratio
def test_label_ratio_nested_stratified_deterministic(tmp_path):
    _make_csv_dataset(tmp_path)
    full = build_datalist(tmp_path, "classification", seed=1)
    train_counts = _class_counts(full["training"])
    for seed in (0, 1, 2):
        previous: set[str] = set()
        for ratio in (0.05, 0.2, 0.4, 0.7, 1.0):
            dl = build_datalist(tmp_path, "classification", seed=seed, label_ratio=ratio)
            assert dl == build_datalist(tmp_path, "classification", seed=seed, label_ratio=ratio)
            assert dl["validation"] == full["validation"] and dl["test"] == full["test"]  # never subsampled
            assert _class_counts(dl["training"]) == {c: max(1, math.ceil(ratio * n - 1e-9)) for c, n in train_counts.items()}
            images = {e["image"] for e in dl["training"]}
            assert previous <= images  # nested
            previous = images
    a = build_datalist(tmp_path, "classification", seed=0, label_ratio=0.4)["training"]
    b = build_datalist(tmp_path, "classification", seed=1, label_ratio=0.4)["training"]
    assert a != b
    seg = build_datalist(tmp_path, "segmentation", seed=0, label_ratio=0.4)
    assert _class_counts(seg["training"]) == _class_counts(a)  # stratified by the label column


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
def test_label_ratio_out_of_range(tmp_path, ratio):
    _make_csv_dataset(tmp_path)
    with pytest.raises(ValueError, match="label_ratio"):
        build_datalist(tmp_path, "classification", label_ratio=ratio)
    with pytest.raises(ValueError, match="label_ratio"):
        subset_by_label_ratio([{"image": "a"}], ratio)


def test_split_pieces():
    entries = [{"image": str(i), "label": "ab"[i % 2]} for i in range(40)]
    train, val = split_validation(entries, 0.25, seed=0, stratify_key="label")
    assert len(val) == 10 and sum(e["label"] == "a" for e in val) == 5 and len(train) == 30
    assert split_validation(entries, 0.25, seed=0, stratify_key="label") == (train, val)
    small = subset_by_label_ratio(entries, 0.1, seed=0, stratify_key="label")
    assert [e["label"] for e in small].count("a") == 2 and set(map(str, small)) <= set(map(str, entries))
    splits = assign_splits(["x"] * 10 + ["y"] * 20, (0.7, 0.1, 0.2), seed=0)
    assert splits[:10].count("test") == 2 and splits[:10].count("val") == 1 and splits[10:].count("test") == 4
    with pytest.raises(ValueError, match="val_fraction"):
        split_validation(entries, 1.0)


# ----------------------------------------------------------------------------- errors
def test_missing_dataset_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        build_datalist(tmp_path / "nope", "segmentation")
    for empty in ("", None):
        with pytest.raises(ValueError, match="ensure_demo_data"):
            build_datalist(empty, "segmentation")
    with pytest.raises(ValueError, match="task"):
        build_datalist(tmp_path, "detection")


def test_no_recognised_source_says_what_was_looked_for(tmp_path):
    (tmp_path / "README.txt").write_text("nothing here")
    for task in ("segmentation", "classification", "pretraining"):
        with pytest.raises(FileNotFoundError) as err:
            build_datalist(tmp_path, task)
        msg = str(err.value)
        assert "datalist.json" in msg and "labels.csv" in msg and "demo data" in msg


def test_missing_image_in_csv_names_file_line_and_path(tmp_path):
    _make_csv_dataset(tmp_path)
    os.remove(tmp_path / "images" / "benign_1.png")
    with pytest.raises(FileNotFoundError) as err:
        build_datalist(tmp_path, "classification")
    msg = str(err.value)
    assert str(tmp_path / "labels.csv") in msg and "line 3" in msg and "images/benign_1.png" in msg


def test_missing_mask_in_csv_only_matters_for_segmentation(tmp_path):
    _make_csv_dataset(tmp_path)
    os.remove(tmp_path / "masks" / "normal_0.png")
    with pytest.raises(FileNotFoundError, match=r"labels\.csv, line \d+: mask 'masks/normal_0.png' does not exist"):
        build_datalist(tmp_path, "segmentation")
    assert build_datalist(tmp_path, "classification")["classes"] == list(CLASSES)


def test_missing_file_in_json_names_file_entry_and_path(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [{"image": "a.png", "label": "a.png"}, {"image": "b.png", "label": "a.png"}]}))
    with pytest.raises(FileNotFoundError) as err:
        build_datalist(tmp_path, "segmentation")
    msg = str(err.value)
    assert str(tmp_path / "datalist.json") in msg and "'training'[1]" in msg and "b.png" in msg


def test_csv_without_image_column(tmp_path):
    (tmp_path / "labels.csv").write_text("file,label\na.png,benign\n")
    with pytest.raises(ValueError, match=r"labels\.csv: no 'image' column"):
        build_datalist(tmp_path, "pretraining")
    with pytest.raises(ValueError, match="no 'image' column"):
        read_labels_csv(tmp_path / "labels.csv")


def test_classification_without_labels(tmp_path):
    _png(tmp_path / "images" / "a.png")
    (tmp_path / "labels.csv").write_text("image,mask\nimages/a.png,\n")
    with pytest.raises(ValueError, match=r"labels\.csv: no 'label' column"):
        build_datalist(tmp_path, "classification")
    with pytest.raises(ValueError, match=r"labels\.csv: no 'mask' column|labels\.csv, line 2: empty 'mask'"):
        build_datalist(tmp_path, "segmentation")
    (tmp_path / "labels.csv").write_text("image,label\nimages/a.png,\n")
    with pytest.raises(ValueError, match=r"labels\.csv, line 2: empty 'label'"):
        build_datalist(tmp_path, "classification")
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [{"image": "images/a.png"}]}))
    with pytest.raises(ValueError, match=r"datalist\.json, 'training'\[0\]: missing 'label'"):
        build_datalist(tmp_path, "classification")


def test_unknown_split_value(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text("image,split\na.png,holdout\n")
    with pytest.raises(ValueError, match=r"labels\.csv, line 2: unknown split 'holdout'"):
        build_datalist(tmp_path, "pretraining")


# ----------------------------------------------------------------------------- demo data
def test_ensure_demo_data(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENUS_MONAI_DEMO_DIR", str(tmp_path / "default"))
    path = ensure_demo_data(None, n=6, seed=0, size=64)
    assert path == str(tmp_path / "default") and has_dataset(path)
    assert ensure_demo_data("", n=6, seed=0, size=64) == path
    for task in ("pretraining", "segmentation", "classification"):
        dl = build_datalist(path, task)
        assert sum(len(dl[s]) for s in ("training", "validation", "test")) == 6
    assert ensure_demo_data("demo", n=6, seed=0, size=64) == path  # asked for by name
    empty, texts = tmp_path / "empty", tmp_path / "texts"
    empty.mkdir()
    texts.mkdir()
    (texts / "notes.txt").write_text("not images")
    for folder, why in ((tmp_path / "missing", "does not exist"), (empty, "holds no data set"), (texts, "holds no data set")):
        with pytest.raises(DatasetNotFoundError, match=why) as err:
            ensure_demo_data(folder, n=3, size=64)
        assert str(folder) in str(err.value)
    assert not (tmp_path / "missing").exists() and not list(empty.iterdir())
    assert [p.name for p in texts.iterdir()] == ["notes.txt"]  # nothing written beside the user's file
    user = tmp_path / "user"
    _make_csv_dataset(user)
    before = sorted(p.name for p in user.iterdir())
    assert ensure_demo_data(user) == str(user) and sorted(p.name for p in user.iterdir()) == before


# ----------------------------------------------------------------------------- BUSI
@pytest.mark.skipif(not (BUSI / "labels.csv").is_file(), reason=f"BUSI not found at {BUSI} (shared data is optional)")
def test_busi():
    for task in ("segmentation", "classification"):
        dl = build_datalist(BUSI, task)
        assert (len(dl["training"]), len(dl["validation"]), len(dl["test"])) == (546, 78, 156)
        for split in ("training", "validation", "test"):
            for e in dl[split]:
                assert os.path.isfile(e["image"])
                if task == "segmentation":
                    assert os.path.isfile(e["label"])
    assert dl["classes"] == ["benign", "malignant", "normal"]
    assert len(build_datalist(BUSI, "pretraining")["training"]) == 780
    small = build_datalist(BUSI, "classification", label_ratio=0.1)
    per_class = {c: sum(e["label"] == c for e in small["training"]) for c in dl["classes"]}
    assert per_class == {"benign": 31, "malignant": 15, "normal": 10}  # ceil(0.1 * 306 / 147 / 93)
    assert small["validation"] == dl["validation"] and small["test"] == dl["test"]


# ----------------------------------------------------------------------------- missing listed files


@pytest.mark.parametrize("source", ["labels.csv", "datalist.json"])
def test_missing_listed_file_left_to_the_validator(tmp_path, source):
    """check_exists=False (what the bundles pass) keeps a missing listed file for validate_datalist, which
    stops naming it, or with skip_invalid drops and reports it; the default still refuses it at once."""
    from openus_monai.data import InvalidDataError, InvalidFiles, validate_datalist

    rows = _make_csv_dataset(tmp_path)
    missing = tmp_path / "images" / "benign_0.png"
    missing.unlink()
    if source == "datalist.json":
        (tmp_path / "labels.csv").unlink()
        split_key = {"train": "training", "val": "validation", "test": "test"}
        lists = {"training": [], "validation": [], "test": []}
        for r in rows:
            lists[split_key[r["split"]]].append({"image": r["image"], "label": r["mask"]})
        (tmp_path / "datalist.json").write_text(json.dumps(lists))
    with pytest.raises(FileNotFoundError, match="benign_0.png"):
        build_datalist(tmp_path, "segmentation")

    datalist = build_datalist(tmp_path, "segmentation", check_exists=False)
    listed = [e["image"] for split in ("training", "validation", "test") for e in datalist[split]]
    assert str(missing) in listed and len(listed) == len(rows)
    with pytest.raises(InvalidDataError, match=r"benign_0\.png.*does not exist"):
        validate_datalist(datalist, InvalidFiles(skip=False), pair=["image", "label"])
    report = InvalidFiles(skip=True, output_dir=tmp_path / "report")
    kept = validate_datalist(datalist, report, pair=["image", "label"])
    kept_images = [e["image"] for split in ("training", "validation", "test") for e in kept[split]]
    assert str(missing) not in kept_images and len(kept_images) == len(rows) - 1
    assert [r["path"] for r in report.write()] == [str(missing)]


def test_a_datalist_file_is_a_dataset_dir_and_the_pretraining_bundles_datalist(tmp_path):
    """A MONAI datalist ``.json`` (e.g. the corpus command's) is read as it is, relative paths from its folder:
    as ``dataset_dir`` of any bundle, and as the pretraining bundle's ``--datalist``."""
    from monai.bundle import ConfigParser

    from _helpers import REPO, demo_dataset, scratch_outputs

    images = sorted((demo_dataset(tmp_path / "demo", n=6, size=32) / "images").glob("*.png"))[:3]
    listed = tmp_path / "corpus" / "my_corpus.json"
    listed.parent.mkdir()
    listed.write_text(json.dumps({"pretraining": [{"image": os.path.relpath(p, listed.parent)} for p in images]}))
    from openus_monai.data.datalist import read_records

    records = read_records(listed, "pretraining")
    assert [r["image"] for r in records] == [str(p.resolve()) for p in images]

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "openus_pretrain" / "configs" / "train.json"))
    parser.update(scratch_outputs({"datalist": str(listed), "bundle_root": str(REPO / "bundles" / "openus_pretrain")}))
    entries = parser.get_parsed_content("train#datalist")
    assert [Path(e["image"]).resolve() for e in entries] == [p.resolve() for p in images]
    assert [e["index"] for e in entries] == [0, 1, 2]
