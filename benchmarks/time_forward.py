"""One VMamba-S no-grad forward at 224 px, timed in a fresh process: for A/B runs between two checkouts.

Run as a file, it imports ``openus_monai`` from ``PYTHONPATH`` when that is set, so one copy of this script times
any checkout; alternate the two so that machine noise hits both alike, and compare medians:

    for i in 1 2 3 4; do for tree in . ../old_checkout; do
        PYTHONPATH=$tree OMP_NUM_THREADS=1 python benchmarks/time_forward.py --batch 16; done; done

``--bf16`` times the bfloat16 inference path instead (``cast_weights_for_autocast`` and CPU autocast).
Prints one JSON line: the checkout, batch, precision, median seconds, peak resident memory (MiB) and the output's
mean absolute value (equal across checkouts that compute the same numbers).
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
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast on weights cast once")
    args = parser.parse_args()

    import openus_monai
    from openus_monai.networks import cast_weights_for_autocast, vmamba_small

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = vmamba_small(in_channels=3).eval()
    if args.bf16:
        model = cast_weights_for_autocast(model)
    x = torch.randn(args.batch, 3, 224, 224)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
        out = model(x)  # warm-up (and the kernel build, if any)
        seconds = median_seconds(lambda: model(x), args.repeats, warmup=0)
    print(json.dumps({
        "checkout": str(Path(openus_monai.__file__).resolve().parents[1]),
        "batch": args.batch,
        "precision": "bfloat16" if args.bf16 else "float32",
        "seconds": round(seconds, 4),
        "peak_rss_mib": round(peak_rss_mib()),
        "output_mean_abs": float(out[-1].double().abs().mean()),
    }))


if __name__ == "__main__":
    main()
