"""Synthetic demo data set: B-mode phantoms with lesion masks, labels.csv and MONAI datalists.

Layout written by :func:`synthesize_dataset` (the layout of ``shared/data/busi``)::

    out_dir/
        images/NAME.png            8-bit grayscale B-mode phantom
        masks/NAME.png             0/255 lesion mask (all zero for "normal")
        labels.csv                 image,mask,label,split (paths relative to out_dir; split in train/val/test)
        datalist_pretrain.json     {"training": [{"image"}]}                      (all images)
        datalist_seg.json          {"training"|"validation"|"test": [{"image", "label": mask}]}
        datalist_cls.json          {"training"|"validation"|"test": [{"image", "label": class name}]}
        synthesis.json             parameters of the run (written last)

Datalist paths are relative to ``out_dir``: MONAI's ``load_decathlon_datalist(path, base_dir=...)``
resolves them against ``base_dir``, which defaults to the folder of the JSON file, i.e. ``out_dir``.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .phantom import LESION_CLASSES, render_phantom
from .splits import assign_splits

__all__ = ["SYNTHESIS_VERSION", "synthesize_dataset"]

#: bump when the generator's output changes, so existing folders are regenerated
SYNTHESIS_VERSION = 1
MANIFEST = "synthesis.json"
_DATALISTS = ("datalist_pretrain.json", "datalist_seg.json", "datalist_cls.json")
_JSON_SPLITS = {"train": "training", "val": "validation", "test": "test"}


def _as_shape(size: int | Sequence[int]) -> tuple[int, int]:
    shape = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)  # type: ignore[arg-type]
    if len(shape) != 2 or min(shape) < 32:
        raise ValueError(f"size must be an int or (H, W) with both >= 32, got {size!r}.")
    return shape  # type: ignore[return-value]


def _plan(n: int, seed: int, fractions: Sequence[float]) -> list[dict[str, str]]:
    """Names, classes and splits of the data set, without rendering anything."""
    # balanced classes (counts differ by at most one), order shuffled by the seed
    labels = [LESION_CLASSES[i % len(LESION_CLASSES)] for i in range(n)]
    labels = [labels[i] for i in np.random.default_rng([int(seed), 0x5EED]).permutation(n)]
    splits = assign_splits(labels, fractions, seed)
    width = max(4, len(str(n - 1)))
    return [
        {"name": f"{label}_{i:0{width}d}", "label": label, "split": split}
        for i, (label, split) in enumerate(zip(labels, splits))
    ]


def _summary(out_dir: Path, plan: list[dict], shape: tuple[int, int], seed: int, reused: bool) -> dict:
    return {
        "out_dir": str(out_dir),
        "n": len(plan),
        "size": list(shape),
        "seed": seed,
        "per_class": dict(sorted(Counter(p["label"] for p in plan).items())),
        "per_split": {s: sum(p["split"] == s for p in plan) for s in ("train", "val", "test")},
        "reused": reused,
    }


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=4) + "\n", encoding="utf-8")


def _is_complete(out_dir: Path, params: dict, plan: list[dict]) -> bool:
    """True when ``out_dir`` holds a finished run with exactly these parameters."""
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if manifest.get("params") != params:
        return False
    files = ["labels.csv", *_DATALISTS]
    files += [f"{d}/{p['name']}.png" for p in plan for d in ("images", "masks")]
    return all((out_dir / f).is_file() for f in files)


def _remove_previous_run(out_dir: Path) -> None:
    """Delete the images and masks listed by an earlier synthesis run (and only those)."""
    csv_path = out_dir / "labels.csv"
    if (out_dir / MANIFEST).is_file() and csv_path.is_file():
        with open(csv_path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                for key in ("image", "mask"):
                    path = (out_dir / (row.get(key) or "")).resolve()
                    if path.parent in (out_dir.resolve() / "images", out_dir.resolve() / "masks"):
                        path.unlink(missing_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)


def synthesize_dataset(
    out_dir: str | os.PathLike,
    n: int = 48,
    seed: int = 0,
    size: int | Sequence[int] = 256,
    split_fractions: Sequence[float] = (0.7, 0.1, 0.2),
    overwrite: bool = False,
) -> dict:
    """Write a deterministic synthetic breast-ultrasound-like data set (images, masks, labels, datalists).

    Each image is a curvilinear B-mode phantom (see :func:`openus_monai.data.phantom.render_phantom`):
    black outside the fan, Rayleigh speckle, wavy tissue layers, depth attenuation with imperfect
    time-gain compensation, and a lesion by class: ``"benign"`` (smooth hypoechoic ellipse, often with
    posterior enhancement), ``"malignant"`` (spiculated hypoechoic mass with posterior shadowing) or
    ``"normal"`` (no lesion, empty mask). Classes are balanced (counts differ by at most one) and the
    train/val/test split is stratified per class. The same arguments give byte-identical files.

    The folder layout is described in the module docstring; datalist paths are relative to
    ``out_dir``. A ``synthesis.json`` manifest with the parameters is written last: when it matches
    and every file exists, nothing is regenerated (cheap re-runs); ``overwrite=True`` forces
    regeneration. A folder that already holds ``labels.csv`` or ``datalist.json`` from elsewhere (no
    manifest) is refused unless ``overwrite=True``.

    Args:
        out_dir: output folder (created if missing).
        n: number of images.
        seed: random seed; image ``i`` depends only on ``(seed, i)`` and its class.
        size: image size, an int (square) or ``(H, W)``.
        split_fractions: (train, val, test) fractions, stratified per class.
        overwrite: regenerate even when a matching run exists.

    Returns:
        summary dict: ``out_dir`` (absolute), ``n``, ``size`` ``[H, W]``, ``seed``, ``per_class``
        (count per class), ``per_split`` (count per ``train``/``val``/``test``), and ``reused`` (True
        when an existing run was kept).
    """
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    n, seed, shape = int(n), int(seed), _as_shape(size)
    out = Path(out_dir).expanduser().absolute()
    params = {
        "generator": "openus_monai.data.synthesize_dataset",
        "version": SYNTHESIS_VERSION,
        "n": n,
        "seed": seed,
        "size": list(shape),
        "split_fractions": [float(f) for f in split_fractions],
    }
    plan = _plan(n, seed, split_fractions)
    if not overwrite and _is_complete(out, params, plan):
        return _summary(out, plan, shape, seed, reused=True)
    if not overwrite and not (out / MANIFEST).exists():
        for name in ("labels.csv", "datalist.json"):
            if (out / name).exists():
                raise FileExistsError(
                    f"{out / name} exists and {out} was not written by synthesize_dataset; "
                    "pass overwrite=True to write the synthetic data set there anyway."
                )
    _remove_previous_run(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)

    rows = []
    for i, item in enumerate(plan):
        image, mask = render_phantom(np.random.default_rng([seed, i]), shape, item["label"])
        image_rel, mask_rel = f"images/{item['name']}.png", f"masks/{item['name']}.png"
        Image.fromarray(image).save(out / image_rel)
        Image.fromarray(mask).save(out / mask_rel)
        rows.append({"image": image_rel, "mask": mask_rel, "label": item["label"], "split": item["split"]})

    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "mask", "label", "split"])  # csv default: CRLF, as BUSI
        writer.writeheader()
        writer.writerows(rows)
    _write_json(out / "datalist_pretrain.json", {"training": [{"image": r["image"]} for r in rows]})
    for filename, label_key in (("datalist_seg.json", "mask"), ("datalist_cls.json", "label")):
        lists: dict[str, list] = {key: [] for key in _JSON_SPLITS.values()}
        for r in rows:
            lists[_JSON_SPLITS[r["split"]]].append({"image": r["image"], "label": r[label_key]})
        _write_json(out / filename, lists)
    _write_json(out / MANIFEST, {"params": params})  # last: its presence marks a finished run
    return _summary(out, plan, shape, seed, reused=False)
