"""SS2D's step sizes projected inside the fused CPU kernel against projected in PyTorch (issue 17).

SS2D's step sizes are a rank-``R`` product, ``dt [B, L, K, R] x dt_projs_weight [K, D, R] -> [B, L, K, D]``
(``R = ceil(C / 16)``). The fused forward passes the factor to the kernel, which projects each token's row
while it scans (``fused_scan(..., delta_weight=...)``); before, PyTorch computed the full product and the
kernel read it back. This times SS2D's no-grad forward both ways at VMamba-S's four stage shapes (224 px
input), interleaving the two so that machine noise hits both alike, and prints medians, their ratio, the
largest output difference, and the size of the ``[B, L, K, D]`` tensor no longer stored.

    python -m benchmarks.bench_ss2d_step_sizes [--batches 1 16] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from openus_monai.networks.ops import scan_fused
from openus_monai.networks.ss2d import SS2D

#: VMamba-S at 224 px: (channels, grid side) of each stage's SS2D
STAGES = ((96, 56), (192, 28), (384, 14), (768, 7))


def expanded_scan(*args, delta_weight=None, **kwargs):
    """:func:`fused_scan` given the full step sizes, projected by PyTorch first (the previous path)."""
    args = list(args)
    args[1] = scan_fused.low_rank_delta(args[1], delta_weight)
    return scan_fused.fused_scan(*args, **kwargs)


def time_both(block: SS2D, x: torch.Tensor, repeats: int) -> tuple[float, float, float]:
    """Median seconds of the forward with the step sizes expanded and projected in the kernel, and the
    largest absolute difference of their outputs."""
    times = {"expanded": [], "kernel": []}
    scans = {"expanded": expanded_scan, "kernel": scan_fused.fused_scan}
    with torch.no_grad():
        outputs = {name: block._forward_fused(x, scan) for name, scan in scans.items()}  # warm-up
        for _ in range(repeats):
            for name, scan in scans.items():
                start = time.perf_counter()
                block._forward_fused(x, scan)
                times[name].append(time.perf_counter() - start)
    diff = (outputs["expanded"] - outputs["kernel"]).abs().max().item()
    return statistics.median(times["expanded"]), statistics.median(times["kernel"]), diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not scan_fused.fused_scan_available():
        raise SystemExit(f"the fused CPU kernel is unavailable: {scan_fused.fused_scan_error()}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"SS2D no-grad forward, {args.threads} threads, median of {args.repeats}, torch {torch.__version__}, "
          f"load average before {os.getloadavg()[0]:.2f}")
    print("| batch | stage: C, grid, R | expanded in PyTorch ms | projected in the kernel ms | ratio | "
          "[B, L, K, D] not stored MiB | max abs diff |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for batch in args.batches:
        for i, (dim, side) in enumerate(STAGES):
            block = SS2D(dim, scan_backend="fused_cpu").eval()
            x = torch.randn(batch, dim, side, side).contiguous(memory_format=torch.channels_last)
            expanded, kernel, diff = time_both(block, x, args.repeats)
            saved = batch * side * side * block.directions * block.d_inner * 4 / 2**20
            print(f"| {batch} | {i}: {dim}, {side} x {side}, {block.dt_rank} | {expanded * 1e3:.1f} | {kernel * 1e3:.1f} | "
                  f"{expanded / kernel:.2f}x | {saved:.0f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
