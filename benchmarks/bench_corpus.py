"""Throughput of ``prepare --cache`` and ``dedup`` on the shared corpus replicated to N files.

    PYTHONPATH=$PWD python benchmarks/bench_corpus.py --sizes 5000 10000 20000 --work /tmp/bench_corpus

The still images of ../shared/data (BUSI and raw/) are copied into a temporary folder of max(N) PNGs;
``prepare --cache`` runs on the first N of them (``--prepare_sizes``) and ``dedup`` on datalists of the first
N (``--sizes``), each size in a fresh process whose own peak RSS is reported (flat when memory does not grow
with N); images/s are printed as a table.

``--copies distinct`` (the default) makes every copy a different image as a perceptual hash sees it (one of
the 8 flips/rotations of the full image or of one of four 60 % crops: 40 variants per source image), so the
number of true duplicate pairs stays that of the sources and the time measures hashing plus the index;
``--copies shifted`` (the first version of this benchmark) shifts each copy by one pixel per copy, so every
source image has N / 2000 near copies and the duplicate groups, hence the output, grow with N squared.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from openus_monai.data.dedup import dedup
from openus_monai.data.formats import RASTER_EXTENSIONS
from openus_monai.data.prepare import prepare

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _variant(arr: np.ndarray, copy: int) -> np.ndarray:
    """Copy number ``copy`` of an image: a flip/rotation (8) of the full image or of a 60 % crop (4 corners)."""
    h, w = arr.shape
    region = (copy // 8) % 5
    if region:
        top, left = (region - 1) // 2 * (h - int(0.6 * h)), (region - 1) % 2 * (w - int(0.6 * w))
        arr = arr[top:top + int(0.6 * h), left:left + int(0.6 * w)]
    arr = np.rot90(arr, copy % 4)
    return np.ascontiguousarray(arr[:, ::-1] if copy % 8 >= 4 else arr)


def replicate(n: int, folder: Path, copies: str = "distinct") -> None:
    """Write ``n`` PNGs (the shared still images, copy ``i // len(sources)`` of each) into ``folder/images``."""
    sources = sorted(p for p in SHARED.rglob("*") if p.suffix.lower() in RASTER_EXTENSIONS and "mask" not in str(p).lower())
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        copy = i // len(sources)
        arr = np.asarray(Image.open(sources[i % len(sources)]).convert("L"))
        arr = _variant(arr, copy) if copies == "distinct" else np.roll(arr, copy, axis=1)
        Image.fromarray(arr).save(folder / "images" / f"{i:06d}.png", compress_level=1)


def _in_fresh_process(fn, *args) -> tuple:
    """``fn(*args)`` in a new process: ``(result, seconds, peak RSS of that process in MiB)``."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measured, (fn, *args))


def _measured(fn, *args) -> tuple:
    t = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prepare(raw: Path, out: Path) -> None:
    prepare(raw, out, cache=True, progress=False, dedup_groups=False)


def _dedup(datalist: Path, out: Path) -> int:
    return dedup([datalist], out, progress=False)["groups"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000], help="dedup corpus sizes")
    parser.add_argument("--prepare_sizes", type=int, nargs="+", default=[5000], help="prepare --cache corpus sizes")
    parser.add_argument("--work", default="/tmp/bench_corpus")
    parser.add_argument("--copies", choices=("distinct", "shifted"), default="distinct", help="how the corpus is replicated")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    n_max = max(args.sizes + args.prepare_sizes)
    t = time.perf_counter()
    replicate(n_max, work / "all", args.copies)
    print(f"replicated {n_max} files in {time.perf_counter() - t:.0f} s", flush=True)
    files = sorted((work / "all" / "images").iterdir())
    rows = []
    for n in sorted(set(args.sizes) | set(args.prepare_sizes)):
        row = {"files": n, "prepare": "", "prepare_rss": "", "dedup": "", "dedup_s": "", "groups": "", "dedup_rss": ""}
        if n in args.prepare_sizes:
            raw = work / f"raw{n}" / "images"
            raw.mkdir(parents=True)
            for f in files[:n]:
                os.link(f, raw / f.name)
            _, dt, rss = _in_fresh_process(_prepare, raw.parent, work / f"prepared{n}")
            row.update(prepare=f"{n / dt:.0f}", prepare_rss=f"{rss:.0f}")
            shutil.rmtree(work / f"prepared{n}")
        if n in args.sizes:
            datalist = work / f"list{n}.json"
            datalist.write_text(json.dumps({"pretraining": [{"image": str(f)} for f in files[:n]]}))
            groups, dt, rss = _in_fresh_process(_dedup, datalist, work / f"dedup{n}")
            row.update(dedup=f"{n / dt:.0f}", dedup_s=f"{dt:.1f}", groups=groups, dedup_rss=f"{rss:.0f}")
        rows.append(row)
        print(row, flush=True)
    print(f"copies: {args.copies}")
    print("| files | prepare --cache img/s | prepare peak RSS, MiB | dedup img/s | dedup s | dup groups | dedup peak RSS, MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['files']} | {r['prepare']} | {r['prepare_rss']} | {r['dedup']} | {r['dedup_s']} | {r['groups']} | {r['dedup_rss']} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
