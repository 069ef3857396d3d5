"""VMamba-S at 224 x 224, batch 1, on the CPU: the fast scans against the sequential reference.

Three passes: an inference forward (``no_grad``), a training forward (autograd records the graph, as
in the student's forward during pretraining), and forward + backward.

Each (backend, pass) case runs in its own process so that its peak memory is its own. Prints one
table with medians, ratios against the reference, and peak resident memory.

    python -m benchmarks.bench_vmamba [--repeats 3] [--threads 2] [--size 224] [--model vmamba_small]

``--profile`` instead profiles the no-grad forward (``torch.profiler``, per op and per block) at batch 1 and
16, and measures beside it, each in its own process, the machine's limit: a 2048 x 2048 float32 GEMM, and
MONAI's ``resnet50(spatial_dims=2, n_input_channels=1)`` forward at the same batch and size. FLOPs are
counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add, as for the GEMM's ``2 n^3``;
matrix products and convolutions; norms and activations count 0), plus for VMamba the scan's analytic count (:func:`scan_flops`).

    python -m benchmarks.bench_vmamba --profile [--batches 1 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os

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


# ---- --profile: where the forward goes, and the machine's limit measured in the same run ----

GEMM_SIZE = 2048


def cpu_description() -> str:
    """PyTorch's CPU capability and whether the CPU has native bfloat16 arithmetic (Linux CPU flags)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    native = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    bf16 = ("native bfloat16: " + ", ".join(native)) if native else "no native bfloat16 (emulated: expect it slower)"
    return f"{torch.backends.cpu.get_cpu_capability()}, {bf16}"


def scan_flops(model: torch.nn.Module, batch: int, size: int) -> int:
    """Analytic FLOPs of every SS2D's four-direction scan, which ``FlopCounterMode`` cannot see (C kernel).

    Per (image, direction, token, channel) and state: ``delta*A``, ``exp``, ``delta*B*u`` (2), ``a*h + ...`` (2),
    ``C*h`` accumulated (2) = 8; and once per (image, direction, token, channel): bias + softplus (2), skip
    ``D*u`` added (2), cross merge (1) = 5, and the step sizes projected from their rank-``R`` factor inside the
    kernel (``2 R``, the ``dt_projs`` product, no longer a PyTorch op). So ``B * K * L * D * (8 N + 5 + 2 R)`` per SS2D.
    """
    from openus_monai.networks.ss2d import SS2D

    total, grid = 0, size // 4
    for i, stage in enumerate(model.layers):
        length = (grid // 2**i) ** 2
        for block in stage.blocks:
            op: SS2D = block.op
            total += batch * op.directions * length * op.d_inner * (8 * op.d_state + 5 + 2 * op.dt_rank)
    return total


def counted_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward as ``torch.utils.flop_counter`` counts them (matrix products and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def _block_labels(model: torch.nn.Module) -> None:
    """Label the stem, each stage's blocks, downsamplings and output norms in the profile (forward hooks)."""
    from torch.autograd.profiler import record_function

    def label(module: torch.nn.Module, name: str) -> None:
        def pre(_m, _i):
            module._bench_rf = record_function(name)
            module._bench_rf.__enter__()

        def post(_m, _i, _o):
            module._bench_rf.__exit__(None, None, None)

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    label(model.patch_embed, "[stem]")
    for i, stage in enumerate(model.layers):
        for block in stage.blocks:
            label(block.op, f"[stage{i} SS2D]")
            label(block.mlp, f"[stage{i} MLP]")
        label(stage.downsample, f"[stage{i} downsample]")


def profile_tables(model: torch.nn.Module, x: torch.Tensor, rows: int) -> tuple[str, str]:
    """One profiled no-grad forward: the top ``rows`` ops by self CPU time, and the labelled blocks."""
    from torch.profiler import ProfilerActivity, profile

    _block_labels(model)
    with torch.no_grad():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
    events = prof.key_averages()
    ops = events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=32)
    blocks = sorted((e for e in events if e.key.startswith("[")), key=lambda e: -e.cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    lines = ["| block | calls | CPU ms (total) | share of forward |", "|---|---:|---:|---:|"]
    lines += [f"| {e.key} | {e.count} | {e.cpu_time_total / 1e3:.1f} | {e.cpu_time_total / total:.0%} |" for e in blocks]
    return ops, "\n".join(lines)


def limit_case(case: str, batch: int, size: int, repeats: int, threads: int) -> dict:
    """One row of the ``--profile`` table: median seconds and counted FLOPs of ``case`` at ``batch``."""
    import openus_monai.networks as networks

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    if case == "gemm":
        a, b = torch.randn(GEMM_SIZE, GEMM_SIZE), torch.randn(GEMM_SIZE, GEMM_SIZE)
        seconds = median_seconds(lambda: torch.mm(a, b), repeats=max(repeats, 5), warmup=2)
        return {"case": case, "seconds": seconds, "flops": 2 * GEMM_SIZE**3}
    if case == "resnet50":
        from monai.networks.nets import resnet50

        model, x = resnet50(spatial_dims=2, n_input_channels=1).eval(), torch.randn(batch, 1, size, size)
        flops = counted_flops(model, x)
    else:
        model, x = networks.vmamba_small(in_channels=1).eval(), torch.randn(batch, 1, size, size)
        flops = counted_flops(model, x) + scan_flops(model, batch, size)
    # bfloat16 by autocast (bf16 GEMMs and convolutions, the scan accumulating in float32), the GEMM and convolution
    # weights cast on every call or once; faster than a model cast to bfloat16, whose norms, activations and casts
    # into the scan cost more
    bf16 = case.startswith("vmamba_bf16")
    if case == "vmamba_bf16":
        networks.cast_weights_for_autocast(model)
    if case == "vmamba_compiled":  # inductor around the fused scan's custom op; compiled by the warm-up call
        model = torch.compile(model, dynamic=False)

    def step():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(x)

    return {"case": case, "seconds": median_seconds(step, repeats=repeats, warmup=1), "flops": flops}


LIMIT_CASES = {
    "gemm": f"{GEMM_SIZE} x {GEMM_SIZE} float32 GEMM",
    "resnet50": "MONAI resnet50(spatial_dims=2) forward, float32",
    "vmamba": "VMamba-S forward, float32",
    "vmamba_bf16_per_call": "VMamba-S forward, bfloat16 autocast, weights cast per call",
    "vmamba_bf16": "VMamba-S forward, bfloat16 autocast, weights cast once",
}
COMPILE_CASE = {"vmamba_compiled": "VMamba-S forward, float32, torch.compile (inductor)"}


def profile_main(args: argparse.Namespace) -> None:
    """``--profile``: the limit table (each case in its own process) for every batch, then the profiles."""
    import openus_monai.networks as networks

    common = ["--size", str(args.size), "--repeats", str(args.repeats), "--threads", str(args.threads)]
    print(f"{args.size} x {args.size}, {args.threads} threads, median of {args.repeats}, torch {torch.__version__}, "
          f"load average before {os.getloadavg()[0]:.2f}; CPU: {cpu_description()}")
    table = ["| batch | case | median s | GFLOPs | GFLOP/s | % of GEMM |", "|---:|---|---:|---:|---:|---:|"]
    summary = {}
    cases = {**LIMIT_CASES, **(COMPILE_CASE if args.compile else {})}
    for batch in args.batches:
        rows = {c: run_isolated("benchmarks.bench_vmamba", common + ["--limit-case", c, str(batch)]) for c in cases}
        gemm = rows["gemm"]["flops"] / rows["gemm"]["seconds"]
        for c, r in rows.items():
            rate = r["flops"] / r["seconds"]
            table.append(f"| {batch} | {cases[c]} | {r['seconds']:.3f} | {r['flops'] / 1e9:.2f} | {rate / 1e9:.1f} | {rate / gemm:.0%} |")
        summary[batch] = (rows["vmamba"]["flops"] / rows["vmamba"]["seconds"] / gemm,
                          *(rows["vmamba"]["seconds"] / rows[c]["seconds"] for c in ("vmamba_bf16", "vmamba_bf16_per_call")))
    print("\n".join(table))
    for batch, (share, bf16, per_call) in summary.items():
        print(f"batch {batch}: VMamba-S float32 at {share:.0%} of the GEMM's GFLOP/s; bfloat16 {bf16:.2f}x float32 "
              f"(weights cast per call: {per_call:.2f}x)")
    print(f"load average after {os.getloadavg()[0]:.2f}")
    torch.set_num_threads(args.threads)
    for batch in args.batches:
        ops, blocks = profile_tables(networks.vmamba_small(in_channels=1).eval(), torch.randn(batch, 1, args.size, args.size), args.rows)
        print(f"\nVMamba-S float32 forward, batch {batch}: per block\n{blocks}\n\nper op\n{ops}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vmamba_small")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="profile the forward and measure the machine's limit")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="batch sizes of --profile")
    parser.add_argument("--rows", type=int, default=15, help="ops listed by --profile")
    parser.add_argument("--compile", action="store_true", help="--profile also times a torch.compile'd forward "
                        "(inductor; the first compile builds C++ for minutes, later ones reuse its cache)")
    parser.add_argument("--case", nargs=2, metavar=("BACKEND", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--limit-case", nargs=2, metavar=("CASE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.limit_case:
        print(json.dumps(limit_case(args.limit_case[0], int(args.limit_case[1]), args.size, args.repeats, args.threads)))
        return
    if args.profile:
        profile_main(args)
        return
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
