"""VMamba-S at 224 x 224, batch 1, on the CPU: the fast scans against the sequential reference.

Three passes: an inference forward (``no_grad``), a training forward (autograd records the graph, as
in the student's forward during pretraining), and forward + backward.

Each (backend, pass) case runs in its own process so that its peak memory is its own. Prints one
table with medians, ratios against the reference, and peak resident memory.

    python -m benchmarks.bench_vmamba [--repeats 3] [--threads 2] [--size 224] [--model vmamba_small]
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks._measure import median_seconds, peak_rss_mib, run_isolated

BACKENDS = ("fused_cpu", "torch", "reference")  # fused_cpu: the C kernel; torch: pure PyTorch
PASSES = ("forward (inference, no grad)", "forward (training, grad recorded)", "forward+backward")


def measure_case(model_name: str, backend: str, mode: str, size: int, repeats: int, threads: int) -> dict:
    import openus_monai.networks as networks

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model = getattr(networks, model_name)(scan_backend=backend, in_channels=3)
    x = torch.randn(1, 3, size, size)
    if mode == PASSES[0]:
        model.eval()

        def step():
            with torch.no_grad():
                model(x)

    elif mode == PASSES[1]:
        model.train()

        def step():
            model(x)

    else:
        model.train()

        def step():
            model.zero_grad(set_to_none=True)
            sum(m.float().mean() for m in model(x)).backward()

    base = peak_rss_mib()
    seconds = median_seconds(step, repeats=repeats, warmup=1)
    return {"backend": backend, "mode": mode, "seconds": seconds, "peak_mib": peak_rss_mib(), "base_mib": base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vmamba_small")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--case", nargs=2, metavar=("BACKEND", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure_case(args.model, *args.case, args.size, args.repeats, args.threads)))
        return

    common = ["--model", args.model, "--size", str(args.size), "--repeats", str(args.repeats), "--threads", str(args.threads)]
    rows = {(b, m): run_isolated("benchmarks.bench_vmamba", common + ["--case", b, m]) for m in PASSES for b in BACKENDS}
    print(f"{args.model}, {args.size} x {args.size}, batch 1, {args.threads} threads, median of {args.repeats} (torch {torch.__version__})")
    print("| pass | scan backend | median s | speed-up vs reference | peak RSS MiB |")
    print("|---|---|---:|---:|---:|")
    for m in PASSES:
        ref = rows[("reference", m)]["seconds"]
        for b in BACKENDS:
            r = rows[(b, m)]
            print(f"| {m} | {b} | {r['seconds']:.3f} | {ref / r['seconds']:.1f}x | {r['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
