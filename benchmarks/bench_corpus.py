"""Throughput of ``prepare --cache`` and ``dedup`` on the shared corpus replicated to N files.

    PYTHONPATH=$PWD python benchmarks/bench_corpus.py --sizes 5000 10000 20000 --work /tmp/bench_corpus

The still images of ../shared/data (BUSI and raw/) are copied, with a per-copy 1-pixel shift so copies are
near (not exact) duplicates, into a temporary folder of max(N) PNGs; ``prepare --cache`` runs on the first N
of them (``--prepare_sizes``) and ``dedup`` on datalists of the first N (``--sizes``); images/s and the peak
RSS so far (resource.getrusage: flat when memory does not grow with N) are printed as a table.
"""

from __future__ import annotations

import argparse
import json
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


def replicate(n: int, folder: Path) -> None:
    """Write ``n`` PNGs (the shared still images, shifted by copy index) into ``folder/images``."""
    sources = sorted(p for p in SHARED.rglob("*") if p.suffix.lower() in RASTER_EXTENSIONS and "mask" not in str(p).lower())
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = sources[i % len(sources)]
        arr = np.asarray(Image.open(src).convert("L"))
        arr = np.roll(arr, i // len(sources), axis=1)
        Image.fromarray(arr).save(folder / "images" / f"{i:06d}.png", compress_level=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000], help="dedup corpus sizes")
    parser.add_argument("--prepare_sizes", type=int, nargs="+", default=[5000], help="prepare --cache corpus sizes")
    parser.add_argument("--work", default="/tmp/bench_corpus")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    n_max = max(args.sizes + args.prepare_sizes)
    t = time.perf_counter()
    replicate(n_max, work / "all")
    print(f"replicated {n_max} files in {time.perf_counter() - t:.0f} s", flush=True)
    files = sorted((work / "all" / "images").iterdir())
    rows = []
    for n in sorted(set(args.sizes) | set(args.prepare_sizes)):
        row = {"files": n, "prepare": "", "dedup": "", "dedup_s": "", "groups": ""}
        if n in args.prepare_sizes:
            raw = work / f"raw{n}" / "images"
            raw.mkdir(parents=True)
            for f in files[:n]:
                os.link(f, raw / f.name)
            t = time.perf_counter()
            prepare(raw.parent, work / f"prepared{n}", cache=True, progress=False, dedup_groups=False)
            row["prepare"] = f"{n / (time.perf_counter() - t):.0f}"
            shutil.rmtree(work / f"prepared{n}")
        if n in args.sizes:
            datalist = work / f"list{n}.json"
            datalist.write_text(json.dumps({"pretraining": [{"image": str(f)} for f in files[:n]]}))
            t = time.perf_counter()
            summary = dedup([datalist], work / f"dedup{n}", progress=False)
            dt = time.perf_counter() - t
            row.update(dedup=f"{n / dt:.0f}", dedup_s=f"{dt:.1f}", groups=summary["groups"])
        row["rss"] = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
        rows.append(row)
        print(row, flush=True)
    print("| files | prepare --cache img/s | dedup img/s | dedup s | dup groups | peak RSS so far, MiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['files']} | {r['prepare']} | {r['dedup']} | {r['dedup_s']} | {r['groups']} | {r['rss']} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
