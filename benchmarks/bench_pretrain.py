"""One OpenUS pretraining iteration on the CPU, split into phases, and the attention-score step.

Table 1: median seconds per phase of one :class:`~openus_monai.engines.PretrainingEngine` iteration with
:class:`~openus_monai.methods.OpenUSMethod` (teacher / masking / student + losses / backward + step + the
method's update: EMA, centres, loss memory) for 2 x 224 px global and 8 x 96 px local views, and the
process's peak resident memory, for each encoder (each in its own process).
Table 2: teacher attention scores of the last block at 224 px (7 x 7 tokens) the O(L) way against the
original's full L x L maps, time and peak memory, each in its own process.

    python -m benchmarks.bench_pretrain [--batch 2] [--iterations 4] [--attention-batch 16]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from benchmarks._measure import median_seconds, peak_rss_mib, run_isolated

ENCODERS = {"vmamba_small": "vmamba_small", "tiny": {"depths": [1, 1, 1, 1], "dims": 16}}


def synthetic_batch(batch: int, n_local: int = 8, global_size: int = 224, local_size: int = 96) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    local_masks = torch.rand(batch, n_local, local_size // 32, local_size // 32, generator=g) < 0.3
    boxes = torch.tensor([0.1, 0.1, 0.9, 0.9, 0.0]).expand(batch, 2, 5).clone()
    return {
        "global_views": torch.rand(batch, 2, 1, global_size, global_size, generator=g),
        "global_boxes": boxes,
        "local_views": torch.rand(batch, n_local, 1, local_size, local_size, generator=g),
        "local_boxes": boxes[:, :1].expand(batch, n_local, 5).clone(),
        "local_masks": local_masks,
        "index": torch.arange(batch),
    }


def openus_trainer(encoder: torch.nn.Module, batch: int, data: list[dict], device: torch.device | str = "cpu", amp: bool | str = False):
    """One epoch of OpenUS pretraining over ``data`` (batches of ``batch`` images): ``OpenUSMethod`` at the paper's
    head sizes (8192 prototypes, 2048 hidden, 256 bottleneck), AdamW with the encoder's parameter groups, the
    paper's schedule values, per-parameter gradient clipping and the last layer frozen for the first epoch.

    Returns:
        ``(PretrainingEngine, OpenUSMethod)``, the method on ``device``.
    """
    from openus_monai.engines import PretrainingEngine
    from openus_monai.handlers import FreezeLastLayerHandler, PerParameterGradClipHandler, PretrainingSchedule
    from openus_monai.methods import OpenUSMethod, SelfAdaptiveMasking
    from openus_monai.networks import param_groups

    net = OpenUSMethod(encoder, masking=SelfAdaptiveMasking(num_images=batch)).to(device)
    optimizer = torch.optim.AdamW(param_groups(net.student, 0.04, 5e-4, encoder=encoder))
    schedule = PretrainingSchedule(lr=5e-4, weight_decay=0.04, teacher_momentum=0.996, teacher_temp=0.04, teacher_patch_temp=0.07, mask_alpha=(0.1, 0.9), mask_r=(0.1, 0.9))
    handlers = [PerParameterGradClipHandler(3.0), FreezeLastLayerHandler(net.student.head, 1)]
    return PretrainingEngine(device, 1, data, net, optimizer, schedule, handlers=handlers, amp=amp), net


def measure_iteration(encoder_name: str, batch: int, iterations: int, threads: int) -> dict:
    from time import perf_counter

    from ignite.engine import Events
    from monai.engines.utils import IterationEvents

    from openus_monai.handlers import PhaseTimerHandler
    from openus_monai.networks import build_encoder

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    encoder = build_encoder(ENCODERS[encoder_name], in_channels=1, drop_path_rate=0.1)
    trainer, net = openus_trainer(encoder, batch, [synthetic_batch(batch)] * (iterations + 1))
    timer = PhaseTimerHandler()
    timer.attach(trainer)
    # split the method's forward (one call) with hooks on its parts: teacher end, masks generated, forward end
    marks: dict[str, float] = {}
    mark = lambda name: marks.__setitem__(name, perf_counter())  # noqa: E731
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda _: mark("start"))
    net.teacher.register_forward_hook(lambda *_: mark("teacher"))
    generate = net.masking.generate
    net.masking.generate = lambda *a, **k: (generate(*a, **k), mark("masking"))[0]
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda _: mark("forward"))
    laps: list[dict[str, float]] = []

    def lap(_) -> None:
        laps.append({
            "teacher": marks["teacher"] - marks["start"],
            "masking": marks["masking"] - marks["teacher"],
            "student": marks["forward"] - marks["masking"],
            "backward": timer.laps["backward"] + timer.laps["step"],
        })

    trainer.add_event_handler(IterationEvents.MODEL_COMPLETED, lap)
    trainer.run()
    timed = laps[1:]  # the first iteration warms up allocators and caches
    phases = {name: statistics.median(lap[name] for lap in timed) for name in timed[0]}
    return {"encoder": encoder_name, "phases": phases, "total": sum(phases.values()), "peak_mib": peak_rss_mib()}


def measure_attention(mode: str, batch: int, threads: int) -> dict:
    from openus_monai.networks import ScanParams, attention_map, attention_scores

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    heads, dim, length = 4, 1536, 49  # VMamba-S last stage: d_inner 1536, 7 x 7 tokens at 224 px
    params = ScanParams(
        torch.nn.functional.softplus(torch.randn(batch, heads, dim, length, generator=g)),
        -torch.exp(torch.randn(heads, dim, 1, generator=g)),
        torch.randn(batch, heads, 1, length, generator=g),
        torch.randn(batch, heads, 1, length, generator=g),
        7,
        7,
    )
    fn = (lambda: attention_scores(params)) if mode == "scores O(L)" else (lambda: attention_map(params).mean(1))
    base = peak_rss_mib()
    with torch.no_grad():
        seconds = median_seconds(fn, repeats=3)
    return {"mode": mode, "batch": batch, "seconds": seconds, "extra_mib": peak_rss_mib() - base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--attention-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        kind, name = args.case.split(":", 1)
        if kind == "iteration":
            print(json.dumps(measure_iteration(name, args.batch, args.iterations, args.threads)))
        else:
            print(json.dumps(measure_attention(name, args.attention_batch, args.threads)))
        return

    common = ["--batch", str(args.batch), "--iterations", str(args.iterations), "--threads", str(args.threads), "--attention-batch", str(args.attention_batch)]
    rows = [run_isolated("benchmarks.bench_pretrain", common + ["--case", f"iteration:{name}"]) for name in ENCODERS]
    print(f"One pretraining iteration, batch {args.batch} (2 x 224 + 8 x 96 views), CPU, {args.threads} threads, median of {args.iterations - 1}")
    print("| encoder | teacher s | masking s | student + losses s | backward + step s | total s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        p = r["phases"]
        print(f"| {r['encoder']} | {p['teacher']:.3f} | {p['masking']:.4f} | {p['student']:.3f} | {p['backward']:.3f} | {r['total']:.3f} | {r['peak_mib']:.0f} |")
    modes = ["scores O(L)", "full L x L map"]
    att = [run_isolated("benchmarks.bench_pretrain", common + ["--case", f"attention:{m}"]) for m in modes]
    print()
    print(f"Teacher attention scores, VMamba-S last block at 224 px (L = 49, 4 x 1536 channels), batch {args.attention_batch}")
    print("| method | median s | extra peak RSS MiB | time ratio | memory ratio |")
    print("|---|---:|---:|---:|---:|")
    for a in att:
        print(f"| {a['mode']} | {a['seconds']:.4f} | {a['extra_mib']:.0f} | {a['seconds'] / att[0]['seconds']:.1f}x | {a['extra_mib'] / max(att[0]['extra_mib'], 1):.0f}x |")


if __name__ == "__main__":
    main()
