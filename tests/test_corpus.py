"""Corpus tooling: frame readers, ``prepare`` (layouts, masks vs images, bad files), ``dedup --exclude``,
group-aware splits and the shared real downloads (skipped when ../shared/data is absent)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from openus_monai.data.dedup import dedup
from openus_monai.data.formats import LoadFramed, iter_frames, probe, read_frame
from openus_monai.data.phantom import render_phantom
from openus_monai.data.prepare import is_label_map, prepare
from openus_monai.data.splits import group_splits

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RAW = SHARED / "raw"
needs_raw = pytest.mark.skipif(not RAW.is_dir(), reason=f"real downloads not found at {RAW}")
needs_busi = pytest.mark.skipif(not (SHARED / "busi").is_dir(), reason=f"BUSI not found at {SHARED / 'busi'}")


def _phantom(seed: int, shape=(96, 112)) -> np.ndarray:
    img, _ = render_phantom(np.random.default_rng(seed), shape, "benign")
    return np.clip(img * 255 if img.max() <= 1 else img, 0, 255).astype(np.uint8)


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.height, s.width, s.pix_fmt = frames[0].shape[0], frames[0].shape[1], "yuv420p"
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(np.stack([f] * 3, -1), format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


# ------------------------------------------------------------------------------------------- readers


def test_readers_on_written_files(tmp_path):
    itk = pytest.importorskip("itk")
    rng = np.random.default_rng(0)
    # multi-frame DICOM: 4 frames, monochrome
    cine = rng.integers(0, 255, (4, 40, 48)).astype(np.uint8)
    itk.imwrite(itk.image_from_array(cine), str(tmp_path / "cine.dcm"))
    assert probe(tmp_path / "cine.dcm").n_frames == 4
    frames = list(iter_frames(tmp_path / "cine.dcm"))
    assert [k for k, _ in frames] == [0, 1, 2, 3] and np.array_equal(frames[2][1], cine[2])
    assert [k for k, _ in iter_frames(tmp_path / "cine.dcm", stride=3)] == [0, 3]
    # RGB DICOM frame -> gray by BT.601
    rgb = rng.integers(0, 255, (30, 36, 3)).astype(np.uint8)
    itk.imwrite(itk.image_from_array(rgb, is_vector=True), str(tmp_path / "rgb.dcm"))
    gray = read_frame(tmp_path / "rgb.dcm")
    assert gray.shape == (30, 36)
    assert np.abs(gray.astype(float) - rgb @ np.array([0.299, 0.587, 0.114])).max() <= 1
    # NIfTI sequence: nibabel (x, y, t) -> frames along t, [rows=y, cols=x]
    seq = rng.random((50, 40, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(seq, np.eye(4)), tmp_path / "seq.nii.gz")
    info = probe(tmp_path / "seq.nii.gz")
    assert (info.n_frames, info.height, info.width) == (5, 40, 50)
    assert np.allclose(read_frame(tmp_path / "seq.nii.gz", 3), seq[:, :, 3].T)
    # MHA and NRRD sequences (ITK): frames first in numpy order, 16-bit values kept
    vol = rng.integers(0, 4000, (3, 22, 26)).astype(np.uint16)
    for ext in (".mha", ".nrrd"):
        itk.imwrite(itk.image_from_array(vol), str(tmp_path / f"vol{ext}"))
        assert probe(tmp_path / f"vol{ext}").n_frames == 3
        assert np.array_equal(read_frame(tmp_path / f"vol{ext}", 2), vol[2])
    # short video
    video = [np.full((32, 48), v, np.uint8) for v in (30, 90, 150, 210, 250, 20, 60)]
    _write_video(tmp_path / "clip.mp4", video)
    got = list(iter_frames(tmp_path / "clip.mp4", stride=2))
    assert [k for k, _ in got] == [0, 2, 4, 6] and got[0][1].shape == (32, 48)
    assert [abs(int(f.mean()) - int(video[k][0, 0])) <= 6 for k, f in got] == [True] * 4
    for ext in (".mov", ".avi"):  # the same clip in the other containers
        _write_video(tmp_path / f"clip{ext}", video)
        assert probe(tmp_path / f"clip{ext}").n_frames == 7 == sum(1 for _ in iter_frames(tmp_path / f"clip{ext}"))
    # GIF and palette masks keep their label values; 16-bit PNG keeps its range
    mask = np.zeros((40, 40), np.uint8)
    mask[10:20, 5:30] = 1
    mask[25:35, 5:30] = 2
    pal = Image.fromarray(mask, mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    pal.save(tmp_path / "pal.png")
    assert set(np.unique(read_frame(tmp_path / "pal.png", mask=True))) == {0, 1, 2}
    Image.fromarray(mask * 127).save(tmp_path / "m.gif")
    assert set(np.unique(read_frame(tmp_path / "m.gif", mask=True))) == {0, 127, 254}
    deep = (rng.random((20, 24)) * 60000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert read_frame(tmp_path / "deep.png").max() == deep.max() > 255
    # LoadFramed reads {"image", "frame"} entries as [1, H, W]
    out = LoadFramed(keys="image")({"image": str(tmp_path / "cine.dcm"), "frame": 1})
    assert out["image"].shape == (1, 40, 48) and np.array_equal(out["image"][0].numpy(), cine[1])


def _write_us_dicom(path: Path, rgb: np.ndarray, photometric: str) -> None:
    """A multi-frame ultrasound DICOM ``[T, H, W, 3]`` stored as RGB or YBR_FULL (pydicom 2.4 or 3)."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "US", "x", generate_uid(), generate_uid()
    ds.NumberOfFrames, ds.Rows, ds.Columns = rgb.shape[:3]
    ds.SamplesPerPixel, ds.PlanarConfiguration, ds.PhotometricInterpretation = 3, 0, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    pix = rgb.astype(np.float64)
    if photometric == "YBR_FULL":  # DICOM PS3.3 C.7.6.3.1.2
        r, g, b = pix[..., 0], pix[..., 1], pix[..., 2]
        pix = np.stack([0.299 * r + 0.587 * g + 0.114 * b, -0.168736 * r - 0.331264 * g + 0.5 * b + 128,
                        0.5 * r - 0.418688 * g - 0.081312 * b + 128], -1)
    ds.PixelData = np.clip(np.round(pix), 0, 255).astype(np.uint8).tobytes()
    try:
        ds.save_as(path, enforce_file_format=True)
    except TypeError:  # pydicom 2
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_colour_dicom_cine_frames_become_luma(tmp_path, photometric):
    rgb = np.random.default_rng(1).integers(0, 255, (3, 20, 24, 3)).astype(np.uint8)
    _write_us_dicom(tmp_path / "cine.dcm", rgb, photometric)
    assert probe(tmp_path / "cine.dcm").n_frames == 3
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    for k, frame in iter_frames(tmp_path / "cine.dcm"):
        assert frame.shape == (20, 24) and np.abs(frame - luma[k]).max() <= 1.5


def test_label_map_test_tells_masks_from_images():
    img = _phantom(1)
    jpeg_mask = np.zeros((64, 64), np.uint8)
    jpeg_mask[20:40, 10:50] = 255
    buf = io.BytesIO()
    Image.fromarray(jpeg_mask).save(buf, "JPEG", quality=70)
    assert is_label_map(np.array(Image.open(buf))) and is_label_map(jpeg_mask // 255)
    assert not is_label_map(img)


# ------------------------------------------------------------------------------------------- prepare


def test_prepare_generic_layout_pairs_masks_and_reports_bad_files(tmp_path):
    root = tmp_path / "download"
    for split in ("", "test/"):
        (root / split / "scans").mkdir(parents=True)
        (root / split / "annot").mkdir(parents=True)
    for i in range(6):
        split = "test/" if i >= 4 else ""
        Image.fromarray(_phantom(i)).save(root / split / "scans" / f"case{i}.png")
        mask = np.zeros((96, 112), np.uint8)
        mask[30:60, 20 + i : 70] = 255
        Image.fromarray(mask).save(root / split / "annot" / f"case{i}.png")  # a mask by content only
    Image.fromarray(mask).save(root / "scans" / "orphan_mask.png")  # mask-like, no image of that name
    (root / "notes.txt").write_text("hello")
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    png = io.BytesIO()
    Image.fromarray(_phantom(9)).save(png, "PNG")
    (bad / "truncated.png").write_bytes(png.getvalue()[:200])
    (bad / "garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"junk" * 50)
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(bad / "pixel.png")
    nib.save(nib.Nifti1Image(np.full((20, 20, 2), np.nan, np.float32), np.eye(4)), bad / "nan.nii.gz")
    _write_video(bad / "noframes.mp4", [_phantom(3, (32, 32))])  # a clip cut after its header: no frames
    (bad / "noframes.mp4").write_bytes((bad / "noframes.mp4").read_bytes()[:48])
    out = tmp_path / "out"
    summary = prepare(root, out, progress=False)
    data = json.loads((out / "datalist.json").read_text())
    report = {r["path"]: r for r in csv.DictReader(open(out / "report.csv"))}
    assert summary["counts"]["images"] == 6 and summary["counts"]["masks"] == 6
    listed = {Path(e["image"]).name for e in data["pretraining"]}
    assert len(data["pretraining"]) == 6 and not any("orphan" in n for n in listed)
    assert all("annot" not in e["image"] for e in data["pretraining"])  # masks never listed as images
    labelled = data["training"] + data["validation"] + data["test"]
    assert len(labelled) == 6 and all(Path(e["mask"]).name == Path(e["image"]).name and "annot" in e["mask"] for e in labelled)
    assert {Path(e["image"]).stem for e in data["test"]} == {"case4", "case5"}  # the published test folder
    assert report["scans/orphan_mask.png"]["status"] == "skipped" and "no image" in report["scans/orphan_mask.png"]["reason"]
    for name, reason in [("empty.png", "0 bytes"), ("truncated.png", ""), ("garbage.dcm", ""), ("pixel.png", "minimum side"),
                         ("nan.nii.gz", "NaN"), ("noframes.mp4", "")]:
        row = report[f"bad/{name}"]
        assert row["status"] == "skipped" and reason in row["reason"] and row["reason"], (name, row)
    assert report["notes.txt"]["status"] == "skipped"
    assert len(report) == summary["counts"]["files"] == sum(1 for p in root.rglob("*") if p.is_file())
    assert not (root / "datalist.json").exists()  # the download is never written to
    # the PNG cache: the same lists, pointing at 8-bit PNGs
    cached = prepare(root, tmp_path / "cached", cache=True, progress=False)
    data = json.loads((tmp_path / "cached" / "datalist.json").read_text())
    assert cached["counts"]["pretraining"] == 6 and all(Path(e["image"]).is_file() and "cache" in e["image"] for e in data["pretraining"])
    assert all(np.array(Image.open(e["mask"])).max() == 255 for e in data["training"])


def test_group_splits_keep_groups_together_and_stratify():
    groups = [f"p{i // 3}" for i in range(90)]  # 30 patients, 3 items each
    labels = ["a" if i < 45 else "b" for i in range(90)]
    splits = group_splits(groups, labels, (0.6, 0.2, 0.2), seed=3)
    by_group = {}
    for g, s in zip(groups, splits):
        by_group.setdefault(g, set()).add(s)
    assert all(len(v) == 1 for v in by_group.values())
    assert {s: splits.count(s) for s in ("train", "val", "test")} == {"train": 54, "val": 18, "test": 18}
    for lab in "ab":
        assert sum(1 for s, l in zip(splits, labels) if s == "test" and l == lab) == 9
    assert splits == group_splits(groups[::-1], labels[::-1], (0.6, 0.2, 0.2), seed=3)[::-1]  # order independent
    assert splits != group_splits(groups, labels, (0.6, 0.2, 0.2), seed=4)


# --------------------------------------------------------------------------------------------- dedup


def test_dedup_exclude_removes_modified_test_copy_and_keeps_others(tmp_path):
    train, test = tmp_path / "train", tmp_path / "test"
    train.mkdir()
    test.mkdir()
    for i in range(12):
        Image.fromarray(_phantom(100 + i, (120, 140))).save(train / f"t{i}.png")
    leaked = _phantom(7, (120, 140))
    Image.fromarray(leaked).save(test / "x.png")
    Image.fromarray(_phantom(8, (120, 140))).save(test / "y.png")
    im = Image.fromarray(leaked).resize((126, 108), Image.Resampling.BICUBIC)
    im = ImageEnhance.Brightness(im).enhance(1.1)
    im.save(train / "copy.jpg", quality=80)
    Image.fromarray(leaked).save(train / "exact.png")
    pre = {"pretraining": [{"image": str(p)} for p in sorted(train.iterdir())]}
    (tmp_path / "pre.json").write_text(json.dumps(pre))
    (tmp_path / "test.json").write_text(json.dumps({"test": [{"image": str(p)} for p in sorted(test.iterdir())]}))
    summary = dedup([tmp_path / "pre.json"], tmp_path / "dd", exclude=tmp_path / "test.json", progress=False)
    kept = {Path(e["image"]).name for e in json.loads((tmp_path / "dd" / "pre.json").read_text())["pretraining"]}
    assert kept == {f"t{i}.png" for i in range(12)} and summary["removed"] == {"pre.json": 2}
    groups = json.loads((tmp_path / "dd" / "groups.json").read_text())["groups"]
    names = [sorted(Path(m["image"]).name for m in g["members"]) for g in groups]
    assert ["copy.jpg", "exact.png"] in names  # the two copies group together, and with no other image



# --------------------------------------------------------------------------------- real downloads


@needs_raw
def test_readers_on_real_files():
    dcm = sorted((RAW / "hip-dicom" / "dicoms" / "ultrasound").glob("*.dcm"))[0]
    label = RAW / "hip-dicom" / "labels" / "ultrasound" / (dcm.stem + ".nii.gz")
    info, linfo = probe(dcm), probe(label)
    assert info.n_frames == linfo.n_frames >= 2 and (info.height, info.width) == (linfo.height, linfo.width)
    frame = read_frame(dcm, 1)
    assert frame.ndim == 2 and frame.dtype == np.uint8 and frame.max() > 100
    assert set(np.unique(read_frame(label, 1, mask=True))) <= {0, 1, 2, 3}
    gif = next((RAW / "ddti" / "mask").glob("*.gif"))
    assert set(np.unique(read_frame(gif, mask=True))) <= {0, 255}
    pal = next((RAW / "usgra-seg" / "dataset" / "masks").glob("*.png"))
    assert set(np.unique(read_frame(pal, mask=True))) <= {0, 1, 2} and is_label_map(read_frame(pal, mask=True))
    video = sorted((RAW / "covid-blues" / "lus_videos").glob("*.mp4"))[0]
    assert probe(video).n_frames == sum(1 for _ in iter_frames(video)) > 10


# folder -> (images, masks): the files there (see ../shared/data/README.md)
REAL_COUNTS = {"usgra-seg": (244, 244), "ddti": (655, 655), "muscle": (179, 0), "hip-planes": (51, 0),
               "covid-blues": (121, 0), "hip-dicom": (7, 7)}


@needs_raw
@pytest.mark.slow
@pytest.mark.parametrize("folder", sorted(REAL_COUNTS))
def test_prepare_real_downloads(folder, tmp_path):
    summary = prepare(RAW / folder, tmp_path, progress=False)
    c = summary["counts"]
    assert (c["images"], c["masks"]) == REAL_COUNTS[folder]
    assert c["files"] == sum(1 for p in (RAW / folder).rglob("*") if p.is_file())
    data = json.loads((tmp_path / "datalist.json").read_text())
    labelled = data["training"] + data["validation"] + data["test"]
    if folder == "ddti":  # several crops per case: a case is on one side only
        side = {}
        for split in ("training", "validation", "test"):
            for e in data[split]:
                side.setdefault(e["group"], set()).add(split)
        assert all(len(s) == 1 for s in side.values()) and len(side) < len(labelled)
        assert all(Path(e["mask"]).stem == Path(e["image"]).stem for e in labelled)
    if folder == "covid-blues":  # patients on one side; every frame of a clip carries its severity
        assert {e["label"] for e in labelled} <= {"0", "1", "2", "3"}
        side = {}
        for split in ("training", "validation", "test"):
            for e in data[split]:
                side.setdefault(e["group"], set()).add(split)
        assert all(len(s) == 1 for s in side.values())
    if folder == "usgra-seg":
        assert len(data["test"]) == 40 and all("/test/" in e["image"] for e in data["test"])
    if folder == "hip-dicom":
        assert len(data["pretraining"]) == sum(probe(p).n_frames for p in (RAW / folder).rglob("*.dcm"))
        assert all("frame" in e for e in data["pretraining"])


@needs_busi
@pytest.mark.slow
def test_prepare_busi_keeps_published_split(tmp_path):
    summary = prepare(SHARED / "busi", tmp_path, progress=False)
    assert (summary["counts"]["images"], summary["counts"]["masks"]) == (780, 780)
    data = json.loads((tmp_path / "datalist.json").read_text())
    assert (len(data["training"]), len(data["validation"]), len(data["test"])) == (546, 78, 156)
    assert data["classes"] == ["benign", "malignant", "normal"]
    assert summary["duplicate_groups_across_published_splits"] > 10  # the published split leaks near duplicates


# --------------------------------------------------------------------------- downstream bundles


def _train_one_epoch(bundle: str, dataset_dir: Path, tmp_path: Path, **overrides) -> None:
    from monai.bundle import ConfigWorkflow

    configs = REPO / "bundles" / bundle / "configs"
    workflow = ConfigWorkflow(
        config_file=[str(configs / "train.json"), str(configs / "tiny.json")], meta_file=str(configs / "metadata.json"),
        logging_file=False, workflow_type="train", dataset_dir=str(dataset_dir), ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "train"), max_epochs=1, num_workers=0, cache_rate=0.0, **overrides,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    assert (tmp_path / "models" / "model.pt").is_file()


@needs_raw
@pytest.mark.slow
def test_bundles_train_on_prepared_lists(tmp_path):
    """openus_seg on DDTI's prepared lists (cached image/mask PNGs, 0/255 masks) and openus_cls on hip-planes'
    (class = folder), one short epoch each, reading datalist.json as-is."""
    import shutil

    ddti = tmp_path / "ddti"  # 24 crops of 4 cases, the download's layout (cropped/, mask/, diagnosis.csv)
    (ddti / "cropped").mkdir(parents=True)
    (ddti / "mask").mkdir()
    for img in sorted((RAW / "ddti" / "cropped").glob("1[0-3]_*.png"))[:24]:
        shutil.copy(img, ddti / "cropped" / img.name)
        shutil.copy(RAW / "ddti" / "mask" / (img.stem + ".gif"), ddti / "mask" / (img.stem + ".gif"))
    shutil.copy(RAW / "ddti" / "diagnosis.csv", ddti / "diagnosis.csv")
    prepare(ddti, tmp_path / "ddti_prepared", cache=True, progress=False)
    _train_one_epoch("openus_seg", tmp_path / "ddti_prepared", tmp_path / "seg", epoch_length=2)
    prepare(RAW / "hip-planes", tmp_path / "hip_prepared", progress=False)
    data = json.loads((tmp_path / "hip_prepared" / "datalist.json").read_text())
    assert len(data["classes"]) == 6
    _train_one_epoch("openus_cls", tmp_path / "hip_prepared", tmp_path / "cls")


@needs_busi
@pytest.mark.slow
def test_busi_redrawn_splits_keep_duplicates_together(tmp_path):
    summary = prepare(SHARED / "busi", tmp_path, progress=False, published_splits=False)
    data = json.loads((tmp_path / "datalist.json").read_text())
    split_of = {e["image"]: s for s in ("training", "validation", "test") for e in data[s]}
    assert len(split_of) == 780 and summary["duplicate_groups_across_published_splits"] == 0
    dd = dedup([tmp_path / "datalist.json"], tmp_path / "dd", progress=False)
    groups = json.loads((tmp_path / "dd" / "groups.json").read_text())["groups"]
    assert dd["groups"] > 100
    assert all(len({split_of[m["image"]] for m in g["members"]}) == 1 for g in groups)  # no duplicate across splits
    for label in ("benign", "malignant", "normal"):  # still stratified: each class in every split
        assert all(any(e["label"] == label for e in data[s]) for s in ("training", "validation", "test"))


def test_corpus_joins_sources_without_test_leaks_or_duplicates(tmp_path):
    from openus_monai.data.corpus import build_corpus
    from openus_monai.data import build_datalist

    root = tmp_path / "downloads"
    a, b = root / "raw" / "seta", root / "setb"
    for split in ("train", "test"):
        (b / split / "images").mkdir(parents=True)
        (b / split / "masks").mkdir(parents=True)
    a.mkdir(parents=True)
    for i in range(4):
        split = "test" if i == 3 else "train"
        img = _phantom(200 + i, (90, 100))
        Image.fromarray(img).save(b / split / "images" / f"b{i}.png")
        mask = np.zeros((90, 100), np.uint8)
        mask[20:50, 30:60] = 255
        Image.fromarray(mask).save(b / split / "masks" / f"b{i}.png")
    for i in range(5):
        Image.fromarray(_phantom(300 + i, (90, 100))).save(a / f"a{i}.png")
    Image.fromarray(_phantom(203, (90, 100))).resize((90, 81)).save(a / "copy_of_test.jpg", quality=85)
    Image.fromarray(_phantom(200, (90, 100))).save(a / "copy_of_b0.png")
    result = build_corpus(root, tmp_path / "corpus", exclude=["setb"], frame_stride=1, progress=False)
    data = json.loads((tmp_path / "corpus" / "datalist.json").read_text())
    rows = {r["source"]: r for r in result["sources"]}
    assert rows["setb"]["test_leaks_removed"] == 1 and rows["seta"]["test_leaks_removed"] == 1  # b3 and its copy
    assert rows["seta"]["duplicates_removed"] + rows["setb"]["duplicates_removed"] == 1  # b0 and copy_of_b0: one kept
    assert len(data["pretraining"]) == 5 + 3 == sum(r["kept"] for r in rows.values())  # a0-a4 + b0-b2 (or copy_of_b0)
    assert {e["source"] for e in data["pretraining"]} == {"seta", "setb"}
    assert len(build_datalist(tmp_path / "corpus", "pretraining")["training"]) == 8  # the pretraining bundle's reader
    assert "total" in result["table"]


def test_near_pairs_index_equals_brute_force():
    from openus_monai.data.hashing import hamming, near_pairs

    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)
    copies = base[rng.integers(0, 300, 300)]
    for _ in range(6):  # 0-6 random bit flips per copy
        copies ^= (np.uint64(1) << rng.integers(0, 64, 300).astype(np.uint64)) * (rng.random(300) < 0.8)
    hashes = np.concatenate([base, copies])
    d = hamming(hashes[:, None], hashes[None])
    for radius in (0, 3, 6, 10):
        i, j, dist = near_pairs(hashes, radius)
        brute = {(a, b) for a, b in zip(*np.nonzero(d <= radius)) if a < b}
        assert set(zip(i.tolist(), j.tolist())) == brute and (dist <= radius).all()
    qi, ti, _ = near_pairs(base, 6, queries=copies)  # queries against an index
    assert set(zip(qi.tolist(), ti.tolist())) == {(a, b) for a, b in zip(*np.nonzero(d[300:, :300] <= 6))}
