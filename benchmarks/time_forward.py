"""One VMamba-S no-grad forward at 224 px, timed in a fresh process: for A/B runs between two checkouts.

Run as a file, it imports ``openus_monai`` from ``PYTHONPATH`` when that is set, so one copy of this script times
any checkout; alternate the two so that machine noise hits both alike, and compare medians:

    for i in 1 2 3 4; do for tree in . ../old_checkout; do
        PYTHONPATH=$tree OMP_NUM_THREADS=1 python benchmarks/time_forward.py --batch 16; done; done

Prints one JSON line: the checkout, batch, median seconds, peak resident memory (MiB) and the output's mean
absolute value (equal across checkouts that compute the same numbers).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from _measure import median_seconds, peak_rss_mib  # this file's own folder: run as a file, sys.path[0] is benchmarks/


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import openus_monai
    from openus_monai.networks import vmamba_small

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = vmamba_small(in_channels=3).eval()
    x = torch.randn(args.batch, 3, 224, 224)
    with torch.no_grad():
        out = model(x)  # warm-up (and the kernel build, if any)
        seconds = median_seconds(lambda: model(x), args.repeats, warmup=0)
    print(json.dumps({
        "checkout": str(Path(openus_monai.__file__).resolve().parents[1]),
        "batch": args.batch,
        "seconds": round(seconds, 4),
        "peak_rss_mib": round(peak_rss_mib()),
        "output_mean_abs": float(out[-1].double().abs().mean()),
    }))


if __name__ == "__main__":
    main()
