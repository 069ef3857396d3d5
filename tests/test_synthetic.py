"""Synthetic demo data: determinism, file layout, masks vs labels, ultrasound-like statistics, CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from openus_monai.data import render_phantom, synthesize_dataset
from openus_monai.data.phantom import sector_geometry, simulate_envelope

REPO = Path(__file__).resolve().parents[1]
N, SIZE = 15, 192


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _rows(folder: Path) -> list[dict]:
    with open(folder / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def _load(folder: Path, rel: str) -> np.ndarray:
    return np.asarray(Image.open(folder / rel))


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2 radius + 1) square."""
    padded = np.pad(mask, radius)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "a"
    return out, synthesize_dataset(out, n=N, seed=0, size=SIZE)


def test_summary_and_layout(dataset):
    out, summary = dataset
    assert summary["out_dir"] == str(out.absolute())
    assert summary["n"] == N and summary["size"] == [SIZE, SIZE] and summary["reused"] is False
    assert summary["per_class"] == {"benign": 5, "malignant": 5, "normal": 5}
    assert sum(summary["per_split"].values()) == N
    for name in ("labels.csv", "datalist_pretrain.json", "datalist_seg.json", "datalist_cls.json", "synthesis.json"):
        assert (out / name).is_file(), name
    assert len(list((out / "images").glob("*.png"))) == N
    assert len(list((out / "masks").glob("*.png"))) == N


def test_labels_csv_matches_busi_format(dataset):
    out, summary = dataset
    header = (out / "labels.csv").read_bytes().split(b"\r\n")[0]
    assert header == b"image,mask,label,split"
    rows = _rows(out)
    assert len(rows) == N
    assert {r["split"] for r in rows} <= {"train", "val", "test"}
    assert {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")} == summary["per_split"]
    for r in rows:
        assert r["image"].startswith("images/") and r["mask"].startswith("masks/")
    # stratified per class, 70/10/20 rounded half up: 5 -> 3 / 1 / 1
    for label in ("benign", "malignant", "normal"):
        splits = [r["split"] for r in rows if r["label"] == label]
        assert (splits.count("train"), splits.count("val"), splits.count("test")) == (3, 1, 1)


def test_same_seed_same_bytes(dataset, tmp_path):
    out, _ = dataset
    again = tmp_path / "b"
    synthesize_dataset(again, n=N, seed=0, size=SIZE)
    assert _hashes(out) == _hashes(again)


def test_different_seed_different_images(dataset, tmp_path):
    out, _ = dataset
    other = tmp_path / "c"
    synthesize_dataset(other, n=N, seed=1, size=SIZE)
    a = [(out / "images" / p.name) for p in sorted((out / "images").iterdir())]
    b = sorted((other / "images").iterdir())
    assert all(x.read_bytes() != y.read_bytes() for x, y in zip(a, b))


def test_masks_match_labels(dataset):
    out, _ = dataset
    for r in _rows(out):
        image, mask = _load(out, r["image"]), _load(out, r["mask"])
        assert image.dtype == np.uint8 and image.ndim == 2 and image.shape == (SIZE, SIZE)
        assert mask.shape == image.shape
        assert set(np.unique(mask)) <= {0, 255}
        if r["label"] == "normal":
            assert not mask.any(), r["mask"]
        else:
            assert (mask > 0).sum() > 100, r["mask"]
            # the lesion lies inside the fan (image > 0 is exactly the fan)
            assert (image[mask > 0] > 0).all()


def test_outside_fan_is_black(dataset):
    out, _ = dataset
    for r in _rows(out):
        image = _load(out, r["image"])
        for corner in (image[:8, :8], image[:8, -8:], image[-4:, :8], image[-4:, -8:]):
            assert not corner.any()
        assert image[SIZE // 2, SIZE // 2] > 0 or image[SIZE // 2 - 5 : SIZE // 2 + 5, SIZE // 2].any()
        assert 0.3 < (image > 0).mean() < 0.95  # a fan, not a full frame


def test_lesions_are_darker_than_surroundings(dataset):
    out, _ = dataset
    for r in _rows(out):
        if r["label"] == "normal":
            continue
        image, mask = _load(out, r["image"]).astype(float), _load(out, r["mask"]) > 0
        ring = _dilate(mask, 6) & ~_dilate(mask, 2) & (image > 0)
        assert image[mask].mean() < image[ring].mean() - 15, r["image"]


def test_posterior_shadowing_and_enhancement(dataset):
    """Below malignant lesions the image is darker than beside them, below benign ones brighter."""
    out, _ = dataset
    ratios = {"benign": [], "malignant": []}
    for r in _rows(out):
        if r["label"] == "normal":
            continue
        image, mask = _load(out, r["image"]).astype(float), _load(out, r["mask"]) > 0
        ys, xs = np.nonzero(mask)
        width = xs.max() - xs.min()
        y0, y1 = ys.max() + 4, min(ys.max() + 4 + width, SIZE)
        x0, x1 = xs.min() + width // 4, xs.max() - width // 4
        below = image[y0:y1, x0:x1]
        side = np.concatenate([image[y0:y1, max(x0 - width, 0) : x0 - width // 2], image[y0:y1, x1 + width // 2 : x1 + width]], 1)
        ratios[r["label"]].append(below[below > 0].mean() / side[side > 0].mean())
    assert np.median(ratios["malignant"]) < 0.85
    assert np.median(ratios["benign"]) > 1.0


def test_speckle_is_correlated_and_rayleigh_like(dataset):
    out, _ = dataset
    cvs, corrs = [], []
    for r in _rows(out):
        image = _load(out, r["image"]).astype(float)
        # local coefficient of variation in 8x8 windows fully inside the fan
        win = image[: SIZE // 8 * 8, : SIZE // 8 * 8].reshape(SIZE // 8, 8, SIZE // 8, 8).transpose(0, 2, 1, 3).reshape(-1, 64)
        win = win[(win > 0).all(1)]
        cvs.append(np.median(win.std(1) / win.mean(1)))
        # neighbouring pixels are correlated (speckle grain), unlike white noise
        inner = image[SIZE // 4 : 3 * SIZE // 4, SIZE // 3 : 2 * SIZE // 3]
        d = inner - inner.mean()
        corrs.append((d[:, 1:] * d[:, :-1]).mean() / d.var())
    assert 0.1 < np.median(cvs) < 0.6
    assert np.median(corrs) > 0.5


def test_envelope_is_rayleigh_in_homogeneous_tissue():
    rng = np.random.default_rng(0)
    geom = sector_geometry(rng, (256, 256))
    env = simulate_envelope(rng, np.ones((256, 256)), geom["depth"], 1.0)[96:160, 96:160]
    # Rayleigh: std / mean = sqrt(4 / pi - 1) ~ 0.523, mean^2 / E[A^2] = pi / 4
    assert abs(env.std() / env.mean() - 0.523) < 0.05
    assert abs(env.mean() ** 2 / (env**2).mean() - np.pi / 4) < 0.04


def test_render_phantom_size_and_label_checks():
    image, mask = render_phantom(np.random.default_rng(0), (96, 128), "malignant")
    assert image.shape == mask.shape == (96, 128) and mask.any()
    with pytest.raises(ValueError, match="label must be one of"):
        render_phantom(np.random.default_rng(0), (64, 64), "cyst")


def test_rectangular_size(tmp_path):
    summary = synthesize_dataset(tmp_path / "r", n=3, seed=0, size=(96, 128))
    assert summary["size"] == [96, 128]
    assert _load(tmp_path / "r", _rows(tmp_path / "r")[0]["image"]).shape == (96, 128)


def test_datalists_point_at_existing_files(dataset):
    out, summary = dataset

    def resolve(path: str) -> str:  # what monai.data.load_decathlon_datalist does with base_dir=out_dir
        return os.path.normpath(os.path.join(out, path))

    pre = json.loads((out / "datalist_pretrain.json").read_text())["training"]
    assert len(pre) == N and all(os.path.isfile(resolve(e["image"])) for e in pre)
    seg_lists, cls_lists = (json.loads((out / f).read_text()) for f in ("datalist_seg.json", "datalist_cls.json"))
    rows = {r["image"]: r for r in _rows(out)}
    total = 0
    for key, split in (("training", "train"), ("validation", "val"), ("test", "test")):
        seg, cls = seg_lists[key], cls_lists[key]
        assert len(seg) == len(cls) == summary["per_split"][split]
        for s, c in zip(seg, cls):
            assert not os.path.isabs(s["image"])  # stored relative to out_dir
            assert os.path.isfile(resolve(s["image"])) and os.path.isfile(resolve(s["label"]))
            assert rows[s["image"]]["mask"] == s["label"] and rows[c["image"]]["label"] == c["label"]
            assert rows[s["image"]]["split"] == split
        total += len(seg)
    assert total == N


def test_rerun_is_cached_and_parameters_regenerate(tmp_path):
    out = tmp_path / "d"
    synthesize_dataset(out, n=6, seed=0, size=64)
    first = out / "images" / sorted(os.listdir(out / "images"))[0]
    mtime = first.stat().st_mtime_ns
    assert synthesize_dataset(out, n=6, seed=0, size=64)["reused"] is True
    assert first.stat().st_mtime_ns == mtime
    assert synthesize_dataset(out, n=6, seed=0, size=64, overwrite=True)["reused"] is False
    # a missing file or other parameters trigger regeneration; stale files of the old run go away
    first.unlink()
    assert synthesize_dataset(out, n=6, seed=0, size=64)["reused"] is False and first.exists()
    assert synthesize_dataset(out, n=3, seed=0, size=64)["reused"] is False
    assert len(os.listdir(out / "images")) == 3 and len(_rows(out)) == 3


def test_refuses_to_overwrite_foreign_dataset(tmp_path):
    (tmp_path / "labels.csv").write_text("image,label\n")
    with pytest.raises(FileExistsError, match="labels.csv"):
        synthesize_dataset(tmp_path, n=3, size=64)
    assert synthesize_dataset(tmp_path, n=3, size=64, overwrite=True)["n"] == 3


def test_cli_synthesize(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "openus_monai", "synthesize", str(out), "--n", "4", "--seed", "3", "--size", "64"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "per_class" in proc.stdout
    assert len(_rows(out)) == 4
    # same bytes as the library call in this process
    assert _hashes(out) == _hashes(Path(synthesize_dataset(tmp_path / "lib", n=4, seed=3, size=64)["out_dir"]))
