"""One short check of the selective-scan backends on a CUDA device: exactness, then VMamba-S and OpenUS speed.

Issue "Speed", items 4-5: the ``"torch"`` scan (pure-PyTorch chunked recurrence) and the opt-in ``"triton"`` scan
(fused Triton kernels) on one GPU; results of one H200 in ``benchmarks/results/gpu_check_h200.md``. ``"mamba_ssm"`` is recorded as
"not installed" where its compiled ``selective_scan_cuda`` is missing. Per backend, in this order:

1. exactness against the sequential reference scan on the CPU (float32): the forward output and the gradient of
   every differentiable input, error ``max|x - ref| / max|ref|`` per tensor (the worst one reported):

   - ``exactness_scan``: the ``selective_scan`` contract (``u, delta [B, D, L]``, ``A [D, N]``, ``B, C [B, G, N, L]``,
     ``D, delta_bias [D]``, softplus) at VMamba-S-like shapes (batch 2, 4 groups = directions of 192 / 384
     channels, 28 x 28 and 14 x 14 tokens, ``d_state`` 1 and 16) and one odd shape, float32 within 1e-4; and
     ``u, delta, B, C`` in bfloat16 within 1e-2 of the float32 reference on the same rounded values;
   - ``exactness_cross``: one SS2D (the four-direction cross scan: Triton's fused cross scan / merge kernel) on
     ``x [2, 96, H, W]``, output and the gradients of ``x`` and of every parameter, float32 within 1e-4;
   - ``exactness_encoder``: the VMamba-S forward ``[2, 3, 224, 224]`` on the GPU against the same weights on the
     CPU with the CPU's default backend, float32 (TF32 off), the four stage maps within 1e-3.

2. ``throughput``: VMamba-S (the encoder, as ``bench_vmamba`` builds it) at 224 px under bfloat16 autocast, batch
   64 and 128: inference images/s (``no_grad`` forward) and training images/s (forward, backward, AdamW step),
   median of ``--repeats`` CUDA-synchronised steps after ``--warmup``, and the peak of
   ``torch.cuda.max_memory_allocated`` (reset per case).
3. ``pretrain``: one OpenUS pretraining iteration (``PretrainingEngine`` + ``OpenUSMethod``, VMamba-S, 2 x 224 px
   global + 8 x 96 px local views, bfloat16 autocast, AdamW, the bundle's gradient handlers), batch 64 (halved
   once on out-of-memory): images/s and peak memory.
4. ``compile`` (only with ``--compile``, and only when 60 s of the budget are left): the inference case of
   ``"torch"`` at batch 64 through ``torch.compile``.

Every case is wrapped: an exception is recorded (type, message, traceback tail) and the run goes on; a case that
the time budget (``--budget-s``) no longer allows is recorded as skipped. ``gpu_check.json`` (every number) and
``gpu_check.md`` (the tables, with the A100 reference of the VMamba README and the H200 goal) are rewritten
after every case, so a run killed at any point leaves what it measured. Each backend runs in a worker process
of its own (a kernel fault that poisons the CUDA context costs that backend only), within its share of the
budget; the workers extend the same JSON file.

On the GPU machine, from the repository root (``$OUT`` gets the JSON, the Markdown and the log)::

    bash benchmarks/gpu_check.sh            # python3 -u -m benchmarks.gpu_check, tee'd to $OUT/gpu_check.log
    python -m benchmarks.gpu_check [--out DIR] [--budget-s 170] [--backends torch triton] [--sections ...]
                                   [--warmup 2] [--repeats 5] [--pretrain-batch 64] [--compile] [--in-process]

On a CPU, the same code path with a tiny VMamba (depths 1, 1, 1, 1, dims 16) at 32 px, batch 2, tiny scan
shapes and Triton in its interpreter (``TRITON_INTERPRET=1``, set here before anything imports Triton); its
timings are meaningless and labelled so::

    python -m benchmarks.gpu_check --dry-run --out /tmp/gpu_check_dry
"""

from __future__ import annotations

import os
import sys
import time

START = time.time()  # the budget counts from here: before torch's import

# Triton decides when it is first imported whether it runs in its interpreter: before torch (which may import it)
if __name__ == "__main__" and "--dry-run" in sys.argv[1:]:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import argparse
import copy
import dataclasses
import gc
import importlib.metadata
import json
import math
import platform
import statistics
import subprocess
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from benchmarks._measure import median_seconds
from benchmarks.bench_pretrain import ENCODERS, openus_trainer, synthetic_batch
from openus_monai.io import atomic_path

BACKENDS = ("torch", "triton")
SECTIONS = ("exactness", "throughput", "pretrain")
#: share of the time budget of each backend's worker (the last one gets whatever is left)
BUDGET_SHARES = {"torch": 0.45, "triton": 0.55}
COMPILE_NEEDS_S = 60.0
KILL_GRACE_S = 10.0  # a worker over its deadline is killed this much later (the last one: FINAL_GRACE_S)
FINAL_GRACE_S = 5.0
SCAN_TOL = {"float32": 1e-4, "bfloat16": 1e-2}
ENCODER_TOL = 1e-3
#: VMamba README, VMamba-S on an A100 (images/s), and this project's H200 goal
A100_REFERENCE = {"inference": 877, "training": 314, "pretrain": None}
H200_GOAL = {"inference": 1800, "training": 600, "pretrain": 250}
GIB = 2**30


# ---------------------------------------------------------------- settings: the GPU run and the dry run


@dataclass(frozen=True)
class Settings:
    """Sizes of one run: the GPU check, or its tiny dry run on the CPU."""

    encoder: str  # key of bench_pretrain.ENCODERS
    size: int  # throughput image size, px
    batches: tuple[int, ...]  # throughput batch sizes
    pretrain_batch: int
    views: dict  # synthetic_batch keyword arguments (view counts and sizes)
    warmup: int
    repeats: int
    #: selective_scan contract cases: (label, batch, D, height, width, d_state, groups, dtype)
    scan_cases: tuple = ()
    #: SS2D cross-scan cases: (label, batch, dim, height, width, d_state)
    cross_cases: tuple = ()
    encoder_batch: int = 2
    encoder_size: int = 224
    #: seconds left that a case of each kind (exactness, inference, training, pretrain) needs to start
    case_needs_s: dict = field(default_factory=dict)


GPU = Settings(
    encoder="vmamba_small",
    size=224,
    batches=(64, 128),
    pretrain_batch=64,
    views=dict(n_local=8, global_size=224, local_size=96),
    warmup=2,
    repeats=5,
    scan_cases=(
        ("VMamba-S-like: K4 x D192, 28x28, N1", 2, 4 * 192, 28, 28, 1, 4, "float32"),
        ("K4 x D192, 14x14, N16", 2, 4 * 192, 14, 14, 16, 4, "float32"),
        ("odd: G2 x D4, 1x17, N4", 1, 8, 1, 17, 4, 2, "float32"),
        ("K4 x D384, 14x14, N1, bf16 u/delta/B/C", 2, 4 * 384, 14, 14, 1, 4, "bfloat16"),
    ),
    cross_cases=(
        ("SS2D dim 96 (D192 x 4 directions), 28x28, N1", 2, 96, 28, 28, 1),
        ("SS2D dim 96 (D192 x 4 directions), 14x14, N16", 2, 96, 14, 14, 16),
    ),
    case_needs_s={"exactness": 4.0, "inference": 4.0, "training": 6.0, "pretrain": 15.0},
)

DRY = Settings(
    encoder="tiny",
    size=32,  # the smallest VMamba input; Triton's interpreter needs seconds per 32 px image
    batches=(2,),
    pretrain_batch=1,
    views=dict(n_local=1, global_size=32, local_size=32),
    warmup=0,
    repeats=1,
    scan_cases=(
        ("K4 x D2, 3x4, N1", 2, 8, 3, 4, 1, 4, "float32"),
        ("odd: G2 x D4, 1x17, N4", 1, 8, 1, 17, 4, 2, "float32"),
        ("K4 x D2, 3x3, N1, bf16 u/delta/B/C", 2, 8, 3, 3, 1, 4, "bfloat16"),
    ),
    cross_cases=(("SS2D dim 4, 3x5, N1", 1, 4, 3, 5, 1), ("SS2D dim 4, 2x3, N4", 1, 4, 2, 3, 4)),
    encoder_batch=2,
    encoder_size=32,
    case_needs_s={},
)


# ---------------------------------------------------------------- the report: JSON and Markdown after every case


class Report:
    """The results (a JSON-able dict) and where they go; :meth:`save` writes both files atomically."""

    def __init__(self, out: Path, data: dict | None = None) -> None:
        self.out = out
        self.data = data if data is not None else {"meta": {}, "environment": {}, "sections": [], "workers": []}

    @classmethod
    def load(cls, out: Path) -> Report:
        """The report a previous process of this run wrote to ``out`` (a new one if there is none)."""
        path = out / "gpu_check.json"
        return cls(out, json.loads(path.read_text()) if path.exists() else None)

    def save(self) -> None:
        self.data["meta"]["saved_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for name, text in (("gpu_check.json", json.dumps(self.data, indent=1, default=str)), ("gpu_check.md", markdown(self.data))):
            with atomic_path(self.out / name) as tmp:
                tmp.write_text(text)


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def error_record(exc: BaseException) -> dict:
    """Type, message (cut to 2,000 characters) and the last 15 lines of the traceback of ``exc``."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return {"type": type(exc).__name__, "message": str(exc)[:2000], "traceback": "".join(lines).splitlines()[-15:]}


class Budget:
    """Wall-clock deadline (``time.time()`` seconds, shared by the worker processes) and each case's minimum."""

    def __init__(self, deadline: float, needs: dict[str, float]) -> None:
        self.deadline, self.needs = deadline, needs

    def left(self) -> float:
        return self.deadline - time.time()

    def why_not(self, kind: str) -> str | None:
        """Why a case of ``kind`` cannot start any more, or None when it can."""
        need = self.needs.get(kind, 0.0)
        left = self.left()
        if left > need:
            return None
        return f"time budget: {max(left, 0):.1f} s left" + (f", a {kind} case needs ~{need:.0f} s" if need else "")


@dataclass
class Case:
    """One measured item: ``run()`` returns its row (``status`` pass / fail / ok), ``kind`` keys the budget."""

    label: str
    kind: str
    run: Callable[[], dict]
    extra: dict = field(default_factory=dict)


def section_status(rows: list[dict]) -> str:
    statuses = {r["status"] for r in rows}
    for status in ("error", "fail"):
        if status in statuses:
            return status
    if statuses <= {"skipped"}:
        return "skipped"
    return "partial" if "skipped" in statuses else "ok"


def run_section(report: Report, budget: Budget, name: str, backend: str | None, cases: Callable[[], list[Case]]) -> None:
    """Run ``cases()`` one by one into a new section of ``report``, saving after each; nothing escapes."""
    section = {"section": name, "backend": backend, "status": "running", "seconds": 0.0, "rows": []}
    report.data["sections"].append(section)
    start = time.perf_counter()
    try:
        todo = cases()
    except Exception as exc:  # building the cases failed: the section's one error
        section.update(status="error", error=error_record(exc), seconds=time.perf_counter() - start)
        log(f"{name} [{backend}]: error {type(exc).__name__}: {exc}")
        report.save()
        return
    for case in todo:
        row = {"case": case.label, "backend": backend, **case.extra, "status": "running"}
        section["rows"].append(row)
        why = budget.why_not(case.kind)
        if why:
            row.update(status="skipped", reason=why)
        else:
            log(f"{name} [{backend}]: {case.label} ...")
            report.save()  # a worker killed now leaves this row "running" (then "killed")
            case_start = time.perf_counter()
            try:
                row.update(case.run())
            except Exception as exc:
                row.update(status="error", error=error_record(exc))
            row["seconds"] = time.perf_counter() - case_start
            free_memory()
        log(f"{name} [{backend}]: {case.label}: {summary(row)}")
        section["seconds"] = time.perf_counter() - start
        report.save()
    section["status"] = section_status(section["rows"])
    report.save()


def summary(row: dict) -> str:
    """One line for the progress log."""
    if row["status"] == "error":
        return f"ERROR {row['error']['type']}: {row['error']['message'][:300]}"
    if row["status"] == "skipped":
        return f"skipped ({row['reason']})"
    if "images_per_s" in row:
        peak = row.get("peak_gib")
        return f"{row['images_per_s']:.1f} img/s, peak {'n/a' if peak is None else f'{peak:.2f} GiB'}"
    if "max_rel_err" in row:
        return f"{row['status']} (worst {row['worst']}: {row['max_rel_err']:.2e}, tolerance {row['tolerance']:.0e})"
    return row["status"]


# ---------------------------------------------------------------- device helpers


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def reset_peak(device: torch.device) -> None:
    free_memory()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """Peak of ``torch.cuda.max_memory_allocated`` since :func:`reset_peak` (None on the CPU)."""
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


class full_float32:
    """float32 matrix products and convolutions (no TF32) inside the block, for the exactness checks."""

    def __enter__(self) -> None:
        self.saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *_) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


class Lazy:
    """A value built on first use and kept, or the exception building it raised (raised again at each use)."""

    def __init__(self, build: Callable[[], object]) -> None:
        self.build, self.done, self.value, self.error = build, False, None, None

    def __call__(self):
        if not self.done:
            self.done = True
            try:
                self.value = self.build()
            except Exception as exc:
                self.error = exc
        if self.error is not None:
            raise self.error
        return self.value


def with_backend(model: torch.nn.Module, backend: str | None, device: torch.device) -> torch.nn.Module:
    """A copy of ``model`` on ``device`` whose every SS2D uses the scan ``backend`` (None: automatic)."""
    from openus_monai.networks.ss2d import SS2D

    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, SS2D):
            module.scan_backend = backend
    return model.to(device)


# ---------------------------------------------------------------- environment


def package_version(name: str) -> str | None:
    """An installed distribution's version, without importing it (Triton must not be imported this early)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict:
    """Versions, the device (name, capability, memory, bfloat16), and the scan backends available here."""
    from openus_monai.networks.ops.scan_cuda import HAS_MAMBA_SSM
    from openus_monai.networks.ops.selective_scan import available_backends, resolve_backend

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch.version.cuda (CUDA runtime)": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "triton": package_version("triton"),
        "numpy": package_version("numpy"),
        "monai": package_version("monai"),
        "pytorch-ignite": package_version("pytorch-ignite"),
        "mamba_ssm": "installed" if HAS_MAMBA_SSM else "not installed (backend 'mamba_ssm' skipped)",
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", "unset"),
        "cpu_count": os.cpu_count(),
        "torch CPU threads": torch.get_num_threads(),
        "device": str(device),
        "scan backends available on the device": available_backends(device),
        "default CPU scan backend (exactness_encoder's reference)": resolve_backend("cpu"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update({
            "gpu": props.name,
            "capability": ".".join(map(str, torch.cuda.get_device_capability(device))),
            "gpu memory GiB": round(props.total_memory / GIB, 1),
            "multiprocessors": props.multi_processor_count,
            "bf16 supported": torch.cuda.is_bf16_supported(),
            "nvidia driver": nvidia_driver(),
        })
    return env


# ---------------------------------------------------------------- exactness


def relative_errors(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], tol: float) -> dict:
    """Per tensor ``max|got - ref|`` and that over ``max|ref|``; pass when every one is finite and within ``tol``."""
    errors = {}
    for name, want in ref.items():
        have = got[name].detach().cpu().double()
        want = want.detach().cpu().double()
        diff = (have - want).abs().max().item()
        scale = want.abs().max().item()
        errors[name] = {"max_abs": diff, "ref_max_abs": scale, "rel": diff / scale if scale > 0 else diff}
    worst = max(errors, key=lambda n: errors[n]["rel"] if math.isfinite(errors[n]["rel"]) else math.inf)
    passed = all(math.isfinite(e["rel"]) and e["rel"] <= tol for e in errors.values())
    return {"status": "pass" if passed else "fail", "tolerance": tol, "metric": "max|x - ref| / max|ref|", "worst": worst,
            "max_rel_err": errors[worst]["rel"], "max_abs_err": max(e["max_abs"] for e in errors.values()), "errors": errors}


def scan_case_inputs(batch: int, dim: int, length: int, d_state: int, groups: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """CPU inputs of the ``selective_scan`` contract: ``u, delta [B, D, L]`` and ``B, C [B, G, N, L]`` in ``dtype``,
    ``A [D, N]`` (negative), ``D, delta_bias [D]`` float32; ``delta`` around 0 so that softplus sees both signs."""
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    sequences = {"u": rand(batch, dim, length), "delta": rand(batch, dim, length) * 0.5,
                 "B": rand(batch, groups, d_state, length), "C": rand(batch, groups, d_state, length)}
    constants = {"A": -torch.exp(rand(dim, d_state) * 0.5), "D": rand(dim), "delta_bias": rand(dim) * 0.1}
    return {k: v.to(dtype) for k, v in sequences.items()} | constants


def weighted_grads(y: torch.Tensor, leaves: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{"y": y}`` and the gradients of ``sum(y * w)`` (``w`` a fixed ramp in [-1, 1]) wrt each leaf, on the CPU."""
    weight = torch.linspace(-1, 1, y.numel(), device=y.device).view_as(y)
    grads = torch.autograd.grad((y.float() * weight).sum(), list(leaves.values()))
    return {"y": y.detach().cpu()} | {f"grad_{name}": grad.cpu() for name, grad in zip(leaves, grads)}


def scan_outputs(inputs: dict[str, torch.Tensor], backend: str, device: torch.device) -> dict[str, torch.Tensor]:
    """``y [B, D, L]`` of ``selective_scan(..., delta_softplus=True)`` and every input's gradient."""
    from openus_monai.networks import selective_scan

    leaves = {k: v.detach().to(device).requires_grad_(True) for k, v in inputs.items()}
    return weighted_grads(selective_scan(**leaves, delta_softplus=True, backend=backend), leaves)


def scan_check(case: tuple, backend: str, device: torch.device) -> dict:
    """A backend on ``device`` against the reference on the CPU (float32 on the same, possibly rounded, values)."""
    _, batch, dim, height, width, d_state, groups, dtype = case
    inputs = scan_case_inputs(batch, dim, height * width, d_state, groups, getattr(torch, dtype))
    ref = scan_outputs({k: v.float() for k, v in inputs.items()}, "reference", torch.device("cpu"))
    got = scan_outputs(inputs, backend, device)
    synchronize(device)
    return relative_errors(got, ref, SCAN_TOL[dtype])


def ss2d_outputs(module: torch.nn.Module, x: torch.Tensor, backend: str, device: torch.device) -> dict[str, torch.Tensor]:
    """SS2D ``y [B, C, H, W]`` for ``x [B, C, H, W]`` and the gradients of ``x`` and of every parameter."""
    module = with_backend(module, backend, device)
    leaves = {"x": x.detach().to(device).requires_grad_(True)} | dict(module.named_parameters())
    return weighted_grads(module(leaves["x"]), leaves)


def cross_check(case: tuple, backend: str, device: torch.device) -> dict:
    """One SS2D (the four-direction cross scan) on ``device`` against the reference scan on the CPU, float32."""
    from openus_monai.networks.ss2d import SS2D

    _, batch, dim, height, width, d_state = case
    torch.manual_seed(0)
    module = SS2D(dim, d_state=d_state)
    x = torch.randn(batch, dim, height, width)
    with full_float32():
        ref = ss2d_outputs(module, x, "reference", torch.device("cpu"))
        got = ss2d_outputs(module, x, backend, device)
    synchronize(device)
    return relative_errors(got, ref, SCAN_TOL["float32"])


def build_model(settings: Settings, backend: str | None, in_channels: int = 3) -> torch.nn.Module:
    """VMamba-S (or the dry run's tiny VMamba) with every SS2D on ``backend``, seeded, on the CPU."""
    from openus_monai.networks import build_encoder

    torch.manual_seed(0)
    return build_encoder(ENCODERS[settings.encoder], in_channels=in_channels, scan_backend=backend)


def encoder_reference(settings: Settings) -> tuple[torch.nn.Module, torch.Tensor, list[torch.Tensor]]:
    """The CPU model (default CPU backend), its input ``[B, 3, S, S]`` and its four maps (float32, no grad)."""
    model = build_model(settings, None).eval()
    x = torch.randn(settings.encoder_batch, 3, settings.encoder_size, settings.encoder_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        maps = model(x)
    return model, x, maps


def encoder_check(reference: Lazy, backend: str, device: torch.device) -> dict:
    """The encoder's forward on ``device`` with ``backend`` against the CPU's, per stage map, float32."""
    model, x, maps = reference()
    moved = with_backend(model, backend, device).eval()
    with torch.no_grad(), full_float32():
        got = moved(x.to(device))
    synchronize(device)
    names = [f"map{i}" for i in range(len(maps))]
    return relative_errors(dict(zip(names, got)), dict(zip(names, maps)), ENCODER_TOL)


def exactness_cases(settings: Settings, backend: str, device: torch.device, reference: Lazy) -> dict[str, list[Case]]:
    """The three exactness sections' cases for ``backend``."""
    dtype = lambda c: {"dtype": c[-1], "shape": "B{} D{} L{}x{} N{} G{}".format(*c[1:7])}  # noqa: E731
    return {
        "exactness_scan": [Case(c[0], "exactness", lambda c=c: scan_check(c, backend, device), dtype(c)) for c in settings.scan_cases],
        "exactness_cross": [Case(c[0], "exactness", lambda c=c: cross_check(c, backend, device),
                                 {"dtype": "float32", "shape": "B{} C{} {}x{} N{}".format(*c[1:])}) for c in settings.cross_cases],
        "exactness_encoder": [Case(f"{settings.encoder} forward vs CPU (default CPU backend)", "exactness",
                                   lambda: encoder_check(reference, backend, device),
                                   {"dtype": "float32", "shape": f"B{settings.encoder_batch} 3x{settings.encoder_size}x{settings.encoder_size}"})],
    }


# ---------------------------------------------------------------- throughput


def throughput_case(model: Lazy, optimizer: Lazy, mode: str, batch: int, settings: Settings, device: torch.device) -> dict:
    """Images/s of ``mode`` ("inference": no-grad forward; "training": forward, backward, AdamW step) on
    ``[batch, 3, size, size]`` under bfloat16 autocast, median of ``repeats`` synchronised steps, and peak memory."""
    net = model()
    net.train(mode == "training")
    opt = optimizer() if mode == "training" else None
    x = torch.randn(batch, 3, settings.size, settings.size, device=device)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731

    def step() -> None:
        if opt is None:
            with torch.no_grad(), autocast():
                net(x)
        else:
            with autocast():
                loss = sum(m.float().mean() for m in net(x))  # bench_vmamba's training loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        synchronize(device)

    reset_peak(device)
    seconds = median_seconds(step, repeats=settings.repeats, warmup=settings.warmup)
    return {"status": "ok", "seconds_per_step": seconds, "images_per_s": batch / seconds, "peak_gib": peak_gib(device)}


def throughput_cases(settings: Settings, backend: str, device: torch.device) -> list[Case]:
    model = Lazy(lambda: build_model(settings, backend).to(device))
    optimizer = Lazy(lambda: torch.optim.AdamW(model().parameters(), lr=1e-4))
    cases = []
    for batch in settings.batches:
        for mode in ("inference", "training"):
            extra = {"kind": mode, "model": settings.encoder, "batch": batch, "size": settings.size, "precision": "bf16 autocast"}
            cases.append(Case(f"{settings.encoder} {mode}", mode, lambda m=mode, b=batch: throughput_case(model, optimizer, m, b, settings, device), extra))
    return cases


# ---------------------------------------------------------------- one OpenUS pretraining iteration


def pretrain_iteration(settings: Settings, backend: str, device: torch.device, batch: int) -> dict:
    """Images/s of OpenUS pretraining iterations (``PretrainingEngine``, bfloat16 autocast, the batch moved to the
    device by the engine as in training): median over ``repeats`` synchronised iterations after ``warmup``."""
    from ignite.engine import Events

    data = [synthetic_batch(batch, **settings.views)] * (settings.warmup + settings.repeats)
    trainer, _ = openus_trainer(build_model(settings, backend, in_channels=1), batch, data, device, amp="bf16")
    starts, laps = [], []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda _: (synchronize(device), starts.append(time.perf_counter())))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: (synchronize(device), laps.append(time.perf_counter() - starts[-1])))
    reset_peak(device)
    trainer.run()
    seconds = statistics.median(laps[settings.warmup:])
    return {"status": "ok", "batch": batch, "seconds_per_step": seconds, "images_per_s": batch / seconds,
            "peak_gib": peak_gib(device), "iteration_seconds": laps}


def pretrain_case(settings: Settings, backend: str, device: torch.device) -> dict:
    """:func:`pretrain_iteration` at the configured batch, once more at half of it after an out-of-memory error."""
    try:
        return pretrain_iteration(settings, backend, device, settings.pretrain_batch)
    except torch.cuda.OutOfMemoryError as exc:
        oom = error_record(exc)
    free_memory()
    return pretrain_iteration(settings, backend, device, settings.pretrain_batch // 2) | {"out_of_memory_at": {"batch": settings.pretrain_batch, **oom}}


def pretrain_cases(settings: Settings, backend: str, device: torch.device) -> list[Case]:
    views = settings.views
    extra = {"kind": "pretrain", "model": settings.encoder, "batch": settings.pretrain_batch, "precision": "bf16 autocast",
             "views": f"2 x {views['global_size']} + {views['n_local']} x {views['local_size']} px"}
    return [Case("OpenUS pretraining iteration", "pretrain", lambda: pretrain_case(settings, backend, device), extra)]


# ---------------------------------------------------------------- torch.compile (optional)


def compile_case(settings: Settings, device: torch.device) -> dict:
    """The inference case of backend "torch" at the first batch through ``torch.compile``; the warm-up compiles."""
    model = torch.compile(build_model(settings, "torch").to(device).eval())
    batch = settings.batches[0]
    x = torch.randn(batch, 3, settings.size, settings.size, device=device)

    def step() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            model(x)
        synchronize(device)

    start = time.perf_counter()
    step()
    compile_s = time.perf_counter() - start
    reset_peak(device)
    seconds = median_seconds(step, repeats=settings.repeats, warmup=settings.warmup)
    return {"status": "ok", "compile_seconds": compile_s, "seconds_per_step": seconds, "images_per_s": batch / seconds, "peak_gib": peak_gib(device)}


# ---------------------------------------------------------------- running: per backend, in-process or in workers


def run_settings(args: argparse.Namespace) -> Settings:
    """:data:`GPU` or :data:`DRY`, with the command line's ``--warmup``, ``--repeats``, ``--pretrain-batch``."""
    overrides = {k: getattr(args, k) for k in ("warmup", "repeats", "pretrain_batch") if getattr(args, k) is not None}
    return dataclasses.replace(DRY if args.dry_run else GPU, **overrides)


def unavailable(backend: str, device: torch.device) -> str | None:
    """Why ``backend`` cannot run on ``device`` here, or None."""
    if backend == "triton":
        from openus_monai.networks.ops.scan_triton import triton_scan_error

        return triton_scan_error(device)
    return None


def run_backend(report: Report, args: argparse.Namespace, backend: str, deadline: float) -> None:
    """Every selected section of ``backend`` (``"compile"``: the torch.compile case) into ``report``."""
    settings, device = run_settings(args), torch.device(args.device)
    budget = Budget(deadline, settings.case_needs_s)
    if backend == "compile":
        if budget.left() < COMPILE_NEEDS_S:
            report.data["sections"].append({"section": "compile", "backend": "torch", "status": "skipped", "rows": [],
                                            "reason": f"time budget: {budget.left():.0f} s left, torch.compile needs ~{COMPILE_NEEDS_S:.0f} s"})
            report.save()
            return
        extra = {"kind": "inference", "model": settings.encoder, "batch": settings.batches[0], "size": settings.size, "precision": "bf16 autocast, torch.compile"}
        run_section(report, budget, "compile", "torch", lambda: [Case("torch.compile inference", "inference", lambda: compile_case(settings, device), extra)])
        return
    why = unavailable(backend, device)
    if why:
        report.data["sections"].append({"section": "all", "backend": backend, "status": "skipped", "rows": [], "reason": why})
        report.save()
        log(f"backend {backend} skipped: {why}")
        return
    groups: dict[str, Callable[[], list[Case]]] = {}
    if "exactness" in args.sections:
        reference = Lazy(lambda: encoder_reference(settings))
        for name, cases in exactness_cases(settings, backend, device, reference).items():
            groups[name] = lambda cases=cases: cases
    if "throughput" in args.sections:
        groups["throughput"] = lambda: throughput_cases(settings, backend, device)
    if "pretrain" in args.sections:
        groups["pretrain"] = lambda: pretrain_cases(settings, backend, device)
    for name, cases in groups.items():
        run_section(report, budget, name, backend, cases)


def record_environment(report: Report, device: torch.device) -> None:
    from openus_monai.networks.ops.scan_cuda import HAS_MAMBA_SSM

    try:
        report.data["environment"] = environment(device)
    except Exception as exc:
        report.data["environment"] = {"error": error_record(exc)}
    if not HAS_MAMBA_SSM:
        report.data["sections"].append({"section": "all", "backend": "mamba_ssm", "status": "skipped", "rows": [],
                                        "reason": "mamba-ssm is not installed (its 'selective_scan_cuda' is not importable)"})
    report.save()
    log("environment: " + ", ".join(f"{k}={v}" for k, v in report.data["environment"].items()))


def worker_plan(args: argparse.Namespace, start: float) -> list[tuple[str, float]]:
    """``(worker, deadline)`` in order: each backend until its cumulative share of the budget, then compile."""
    names = [b for b in BACKENDS if b in args.backends]
    total = sum(BUDGET_SHARES[b] for b in names) or 1.0
    plan, share = [], 0.0
    for i, name in enumerate(names):
        share = 1.0 if i == len(names) - 1 else share + BUDGET_SHARES[name] / total
        plan.append((name, start + args.budget_s * share))
    if args.compile and not args.dry_run:
        plan.append(("compile", start + args.budget_s))
    return plan


def new_report(args: argparse.Namespace, argv: list[str]) -> Report:
    report = Report(Path(args.out))
    report.data["meta"] = {
        "dry_run": args.dry_run,
        "note": "DRY RUN on the CPU: tiny model and shapes, Triton interpreted; timings meaningless" if args.dry_run else "",
        "command": "python -m benchmarks.gpu_check " + " ".join(argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "budget_s": args.budget_s,
        "device": args.device,
        "backends": list(args.backends),
        "sections": list(args.sections),
        "settings": {k: v for k, v in vars(run_settings(args)).items() if k not in ("scan_cases", "cross_cases")},
        "a100_reference": A100_REFERENCE,
        "h200_goal": H200_GOAL,
    }
    return report


def run_in_process(args: argparse.Namespace, argv: list[str]) -> Report:
    """Everything in this process (the test's path; also ``--in-process``)."""
    start = START if __name__ == "__main__" else time.time()
    report = new_report(args, argv)
    record_environment(report, torch.device(args.device))
    for name, deadline in worker_plan(args, start):
        run_backend(report, args, name, deadline)
    report.data["meta"]["total_seconds"] = time.time() - start
    report.save()
    return report


def run_workers(args: argparse.Namespace, argv: list[str]) -> Report:
    """One worker process per backend (then compile), each killed past its deadline plus a grace."""
    start = START if __name__ == "__main__" else time.time()
    report = new_report(args, argv)
    report.save()
    plan = worker_plan(args, start)
    env = dict(os.environ)
    if args.dry_run:
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)  # the compiled kernels on the GPU
    for i, (name, deadline) in enumerate(plan):
        hard = deadline + (FINAL_GRACE_S if i == len(plan) - 1 else KILL_GRACE_S)
        command = [sys.executable, "-u", "-m", "benchmarks.gpu_check", *argv, "--out", str(args.out), "--worker", name, "--deadline", repr(deadline)]
        log(f"worker {name}: until {deadline - start:.0f} s of {args.budget_s:.0f} s")
        worker_start = time.time()
        proc = subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parents[1])  # benchmarks/ importable
        try:
            rc, killed = proc.wait(timeout=max(hard - time.time(), 1.0)), False
        except subprocess.TimeoutExpired:
            proc.kill()
            rc, killed = proc.wait(), True
        report = Report.load(Path(args.out))
        died = "killed" if killed else f"worker exit status {rc}"
        for section in report.data["sections"]:  # where the worker died
            for item in [section, *section.get("rows", [])]:
                if item["status"] == "running":
                    item["status"] = died
        report.data["workers"].append({"worker": name, "rc": rc, "killed_at_deadline": killed, "seconds": time.time() - worker_start})
        report.save()
        if rc:
            log(f"worker {name}: exit status {rc}{' (killed: past its deadline)' if killed else ''}")
    report.data["meta"]["total_seconds"] = time.time() - start
    report.save()
    return report


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="output folder (default $OUT, else ./gpu_check_out)")
    parser.add_argument("--budget-s", type=float, default=170.0, help="wall-clock budget; cases past it are recorded as skipped")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--warmup", type=int, help="untimed steps per case (default 2; dry run 0)")
    parser.add_argument("--repeats", type=int, help="timed steps per case, median reported (default 5; dry run 1)")
    parser.add_argument("--pretrain-batch", type=int, help="images per pretraining iteration (default 64; dry run 1)")
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd inference (if 60 s are left)")
    parser.add_argument("--dry-run", action="store_true", help="the same code path on the CPU, tiny sizes, Triton interpreted")
    parser.add_argument("--in-process", action="store_true", help="no worker processes (a CUDA fault then costs every later case)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.device = "cpu" if args.dry_run else "cuda"
    args.out = Path(args.out).resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:  # one worker of run_workers: extend the report the driver and earlier workers wrote
        report = Report.load(args.out)
        if not report.data["environment"]:
            record_environment(report, torch.device(args.device))
        run_backend(report, args, args.worker, args.deadline)
        return 0
    if not args.dry_run and not torch.cuda.is_available():
        report = new_report(args, argv)
        report.data["meta"]["note"] = "no CUDA device visible to torch: nothing checked (--dry-run runs the code path on the CPU)"
        report.save()
        log(report.data["meta"]["note"])
        return 2
    report = run_in_process(args, argv) if args.in_process else run_workers(args, argv)
    statuses = [s["status"] for s in report.data["sections"]]
    log(f"done in {report.data['meta']['total_seconds']:.0f} s: " + ", ".join(f"{s}={statuses.count(s)}" for s in sorted(set(statuses)))
        + f"; {args.out / 'gpu_check.json'}, {args.out / 'gpu_check.md'}")
    return 0


# ---------------------------------------------------------------- Markdown


def fmt(value, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(data: dict) -> str:
    """The report as Markdown tables: environment, exactness, throughput, sections (errors and skips), workers."""
    meta = data["meta"]
    dry = meta.get("dry_run")
    lines = [f"# GPU check: {data['environment'].get('gpu', meta.get('device', '?'))}", ""]
    if meta.get("note"):
        lines += [f"**{meta['note']}.**", ""]
    lines += [f"`{meta.get('command', '')}`, started {meta.get('started')}, budget {meta.get('budget_s')} s, "
              f"saved {meta.get('saved_at')}, total {fmt(meta.get('total_seconds'), '.0f')} s", ""]
    lines += ["## Environment", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in data["environment"].items()]
    rows = [(s, r) for s in data["sections"] for r in s.get("rows", [])]
    lines += ["", "## Exactness against the sequential reference scan (float32, on the CPU)", "",
              "Error: max|x - ref| / max|ref| per tensor (output and every gradient); the worst tensor is named.", "",
              "| check | case | shape | backend | dtype | worst tensor | max rel err | max abs err | tolerance | result |",
              "|---|---|---|---|---|---|---:|---:|---:|---|"]
    for s, r in rows:
        if s["section"].startswith("exactness"):
            lines.append(f"| {s['section']} | {r['case']} | {r.get('shape', '')} | {r['backend']} | {r.get('dtype', '')} | {r.get('worst', '')} | "
                         f"{fmt(r.get('max_rel_err'), '.2e')} | {fmt(r.get('max_abs_err'), '.2e')} | {fmt(r.get('tolerance'), '.0e')} | {outcome(r)} |")
    rate = "img/s (dry run: meaningless)" if dry else "img/s"
    lines += ["", "## Throughput (bfloat16 autocast; median of CUDA-synchronised steps)", "",
              f"| case | batch | backend | {rate} | peak GiB | A100 reference | H200 goal | met? |", "|---|---:|---|---:|---:|---:|---:|---|"]
    for s, r in rows:
        if s["section"] in ("throughput", "pretrain", "compile"):
            kind = r.get("kind", s["section"])
            case = f"{r['case']} ({r.get('views') or str(r.get('size', '')) + ' px'}, {r.get('precision', '')})"
            goal, got = H200_GOAL.get(kind), r.get("images_per_s")
            met = "n/a (dry run)" if dry else ("yes" if got and goal and got >= goal else "no" if got else outcome(r))
            lines.append(f"| {case} | {r.get('batch', '')} | {r['backend']} | {fmt(got, '.1f')} | {fmt(r.get('peak_gib'), '.2f')} | "
                         f"{fmt(A100_REFERENCE.get(kind), 'd') if A100_REFERENCE.get(kind) else '-'} | {fmt(goal, ',d')} | {met} |")
    lines += ["", "## Sections", "", "| section | backend | status | seconds | errors and skips |", "|---|---|---|---:|---|"]
    for s in data["sections"]:
        notes = [s["reason"]] if s.get("reason") else []
        notes += [f"{s['error']['type']}: {s['error']['message'][:200]}"] if s.get("error") else []
        notes += [f"{r['case']}: {outcome(r)}" for r in s.get("rows", []) if r["status"] not in ("ok", "pass", "fail")]
        lines.append(f"| {s['section']} | {s['backend']} | {s['status']} | {fmt(s.get('seconds'), '.1f')} | {'<br>'.join(notes).replace('|', '/')} |")
    if data.get("workers"):
        lines += ["", "## Worker processes", "", "| worker | exit status | killed at deadline | seconds |", "|---|---:|---|---:|"]
        lines += [f"| {w['worker']} | {w['rc']} | {w['killed_at_deadline']} | {w['seconds']:.1f} |" for w in data["workers"]]
    return "\n".join(lines) + "\n"


def outcome(row: dict) -> str:
    if row["status"] == "error":
        return f"ERROR {row['error']['type']}: {row['error']['message'][:200]}".replace("\n", " ").replace("|", "/")
    if row["status"] == "skipped":
        return f"skipped: {row['reason']}"
    return row["status"]


if __name__ == "__main__":
    sys.exit(main())
