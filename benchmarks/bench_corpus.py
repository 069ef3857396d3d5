"""Throughput of ``prepare --cache`` and ``dedup`` on the shared corpus replicated to N files.

    PYTHONPATH=$PWD python benchmarks/bench_corpus.py --sizes 5000 10000 20000 --work /tmp/bench_corpus

The still images of ../shared/data (BUSI and raw/) are copied, with a per-copy 1-pixel shift so copies are
near (not exact) duplicates, into a temporary folder of N files; ``prepare --cache`` and ``dedup`` run on it
and images/s and peak RSS (resource.getrusage) are printed as a table.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000])
    parser.add_argument("--work", default="/tmp/bench_corpus")
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        work = Path(args.work) / str(n)
        shutil.rmtree(work, ignore_errors=True)
        replicate(n, work / "raw")
        t = time.perf_counter()
        prepare(work / "raw", work / "prepared", cache=True, progress=False)
        t_prep = time.perf_counter() - t
        t = time.perf_counter()
        summary = dedup([work / "prepared" / "datalist.json"], work / "dedup", progress=False)
        t_dedup = time.perf_counter() - t
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append((n, n / t_prep, n / t_dedup, t_dedup, summary["groups"], rss))
        shutil.rmtree(work, ignore_errors=True)
    print("| files | prepare --cache img/s | dedup img/s | dedup s | groups | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.0f} | {r[2]:.0f} | {r[3]:.1f} | {r[4]} | {r[5]:.0f} |")


if __name__ == "__main__":
    main()
