"""Kill -9 a bundle's training and resume it: the resumed run must continue from the last complete checkpoint and
end with the weights of an uninterrupted run.

Used by ``tests/test_interruption.py``; also a script printing one table row per kill::

    python tests/fault_injection.py --bundle openus_pretrain --kills 3
    python tests/fault_injection.py --bundle all --kills 3 --seed 0

For each bundle (tiny configuration, CPU, one thread): one uninterrupted reference run, then a chain of runs
of the same job in one ``ckpt_dir``: the first is SIGKILLed in the middle of a checkpoint write (a test-only
``sitecustomize`` on ``PYTHONPATH`` makes the chosen ``torch.save`` write half of the file, then sleep), each
next one is started with ``--resume true`` and SIGKILLed after a random (seeded) number of iterations, and
the last runs to the end. After every kill the newest complete checkpoint is found independently (every
``*.pt`` loaded with ``weights_only=True``) and the next run must report restoring exactly that file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().parent / "fault_hooks"

# Per bundle: overrides of tiny.json that give several checkpoints, the checkpoint name prefix, and the
# number of demo images. pretrain: 16 images / batch 4 = 4 iterations per epoch, one save per epoch.
BUNDLES: dict[str, dict] = {
    "openus_pretrain": {"prefix": "pretrain", "demo": 16, "saves": 4, "overrides": {"max_epochs": 4, "save_interval": 4}},
    "openus_seg": {"prefix": "seg", "demo": 48, "saves": 4, "overrides": {"max_epochs": 4}},
    "openus_cls": {"prefix": "cls", "demo": 48, "saves": 4, "overrides": {"max_epochs": 4}},
    # checkpoints in the middle of epochs (every 2 of 4 iterations), resumed with MidEpochResumeHandler added
    "openus_pretrain_midepoch": {
        "bundle": "openus_pretrain", "prefix": "pretrain", "demo": 16, "saves": 6,
        "overrides": {"max_epochs": 3, "save_interval": 2},
        "extra_config": {"+train#checkpoint_handlers": [{"_target_": "openus_monai.handlers.MidEpochResumeHandler"}]},
    },
}
_ITER = re.compile(r"Epoch: (\d+)/\d+, Iter: (\d+)/(\d+)")
_RESTORED = re.compile(r"Restored all variables from (\S+)")


@dataclass
class Attempt:
    """One process of the chain."""

    fault: str  # "kill during checkpoint write", "kill at iteration N", "none (runs to the end)"
    resumed_from: str | None = None  # checkpoint the process restored (None: fresh start)
    resumed_iteration: int = 0
    last_logged_iteration: int = 0  # iteration the process had reached when it died
    killed: bool = False
    partial_file: str | None = None  # file being written at the kill
    complete_after: str | None = None  # newest complete checkpoint left on disk after it ended
    complete_after_iteration: int = 0
    log_tail: str = ""


@dataclass
class ChainResult:
    bundle: str
    attempts: list[Attempt] = field(default_factory=list)
    max_abs_diff: float = float("nan")
    final_iteration: int = 0
    rejected_files: list[str] = field(default_factory=list)
    leftover_tmp: list[str] = field(default_factory=list)
    seconds: float = 0.0


def bundle_dir(bundle: str) -> Path:
    """The bundle folder of a scenario (a key of BUNDLES, or a bundle name)."""
    return REPO / "bundles" / BUNDLES.get(bundle, {}).get("bundle", bundle)


def config_files(bundle: str, work: Path | None = None) -> list[str]:
    """train.json and tiny.json of the scenario's bundle, plus its ``extra_config`` (written into ``work``)."""
    files = [str(bundle_dir(bundle) / "configs" / "train.json"), str(bundle_dir(bundle) / "configs" / "tiny.json")]
    extra = BUNDLES.get(bundle, {}).get("extra_config")
    if extra:
        work = Path(work or REPO)
        work.mkdir(parents=True, exist_ok=True)
        (work / "extra_config.json").write_text(json.dumps(extra, indent=4))
        files.append(str(work / "extra_config.json"))
    return files


def command(bundle: str, work: Path, data: Path, resume: bool) -> list[str]:
    args = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", json.dumps(config_files(bundle, work))]
    args += ["--ckpt_dir", str(work / "models"), "--output_dir", str(work / "eval"), "--dataset_dir", str(data)]
    for key, value in BUNDLES[bundle]["overrides"].items():
        args += [f"--{key}", json.dumps(value)]
    if resume:
        args += ["--resume", "true"]
    return args


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env.pop("OPENUS_FAULT_SLOW_SAVE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if extra:
        env["PYTHONPATH"] = os.pathsep.join([str(HOOKS), env["PYTHONPATH"]])
        env.update(extra)
    return env


def prepare_data(bundle: str, root: Path) -> Path:
    """Generate the demo data set once, before any run (so no run is killed while generating it)."""
    from openus_monai.data import synthesize_dataset

    data = root / f"data_{bundle_dir(bundle).name}"
    synthesize_dataset(data, n=BUNDLES[bundle]["demo"], seed=0)  # the bundles never write into a named folder
    return data


def complete_checkpoints(ckpt_dir: Path, prefix: str) -> list[tuple[int, Path]]:
    """(trainer iteration, path) of every checkpoint that loads with weights_only=True, oldest first."""
    found = []
    for path in ckpt_dir.glob(f"{prefix}*.pt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            found.append((int(state["trainer"]["iteration"]), path))
        except Exception:  # noqa: BLE001 - partial or foreign: not complete
            continue
    return sorted(found, key=lambda t: (t[0], "final" in t[1].name))


def run_to_end(bundle: str, work: Path, data: Path, resume: bool = False, timeout: float = 900) -> str:
    proc = subprocess.run(
        command(bundle, work, data, resume), cwd=bundle_dir(bundle), env=environment(), capture_output=True, text=True, timeout=timeout
    )
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{bundle} run failed (exit {proc.returncode}):\n{log[-4000:]}")
    return log


def run_in_process(bundle: str, work: Path, data: Path) -> None:
    """The uninterrupted reference run in this process (saves a Python start; same numbers on one thread)."""
    from monai.bundle import ConfigWorkflow

    torch.set_num_threads(1)
    overrides = {"ckpt_dir": str(work / "models"), "output_dir": str(work / "eval"), "dataset_dir": str(data), **BUNDLES[bundle]["overrides"]}
    workflow = ConfigWorkflow(config_file=config_files(bundle, work), workflow_type="train", run_id="training", **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_and_kill(bundle: str, work: Path, data: Path, attempt: Attempt, resume: bool, kill_at_iteration: int | None, slow_save_nth: int | None, timeout: float = 900) -> str:
    """Start a run; SIGKILL it (whole process group) when the marker of a slowed checkpoint write appears, or
    once it has logged ``kill_at_iteration``. Returns the log; fills ``attempt``."""
    marker = work / "fault_marker"
    marker.unlink(missing_ok=True)
    extra = None
    if slow_save_nth is not None:
        extra = {
            "OPENUS_FAULT_SLOW_SAVE": f"{BUNDLES[bundle]['prefix']}_checkpoint_*",
            "OPENUS_FAULT_SLOW_SAVE_NTH": str(slow_save_nth),
            "OPENUS_FAULT_MARKER": str(marker),
        }
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / f"log_{len(list(work.glob('log_*')))}.txt"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            command(bundle, work, data, resume), cwd=bundle_dir(bundle), env=environment(extra),
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,  # own group: kill -9 takes children too
        )
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{bundle}: run did not reach its kill point in {timeout} s")
                if slow_save_nth is not None and marker.exists():
                    attempt.partial_file = Path(marker.read_text()).name
                    break
                if kill_at_iteration is not None and _last_iteration(log_path.read_text()) >= kill_at_iteration:
                    break
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                _kill(proc)
                attempt.killed = True
    return log_path.read_text()


def _last_iteration(log: str) -> int:
    """Global iteration of the last logged ``Epoch: e/E, Iter: i/n`` line (0 if none)."""
    hits = _ITER.findall(log)
    if not hits:
        return 0
    epoch, it, per_epoch = map(int, hits[-1])
    return (epoch - 1) * per_epoch + it


def _first_iteration(log: str) -> int:
    """Global iteration of the first logged ``Epoch: e/E, Iter: i/n`` line (0 if none)."""
    hits = _ITER.findall(log)
    if not hits:
        return 0
    epoch, it, per_epoch = map(int, hits[0])
    return (epoch - 1) * per_epoch + it


def network_of(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["network"]


def final_checkpoint(ckpt_dir: Path, prefix: str) -> Path:
    return complete_checkpoints(ckpt_dir, prefix)[-1][1]


def flat_tensors(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """A state dict with nested dicts (a method's ``_extra_state``, e.g. the masking memory) as flat ``a.b`` keys."""
    flat = {}
    for key, value in state.items():
        if isinstance(value, dict):
            flat |= flat_tensors(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest difference of the floating-point tensors of two (possibly nested) state dicts."""
    a, b = flat_tensors(a), flat_tensors(b)
    if a.keys() != b.keys():
        raise AssertionError(f"different keys: {sorted(set(a) ^ set(b))[:10]}")
    return max(((a[k].double() - b[k].double()).abs().max().item() if a[k].numel() else 0.0) for k in a if a[k].is_floating_point())


def run_chain(bundle: str, root: Path, kills: int = 2, seed: int = 0, in_process_reference: bool = False) -> ChainResult:
    """An uninterrupted reference run (a subprocess, or in this process), then one kill during a checkpoint
    write, ``kills - 1`` random kills with resume, and a final resumed run to the end, all in one ``ckpt_dir``."""
    start = time.monotonic()
    rng = random.Random(f"{bundle}-{seed}")
    spec = BUNDLES[bundle]
    prefix = spec["prefix"]
    data = prepare_data(bundle, root)
    ref_work = root / f"{bundle}_reference"
    if in_process_reference:
        run_in_process(bundle, ref_work, data)
    else:
        run_to_end(bundle, ref_work, data)
    reference = final_checkpoint(ref_work / "models", prefix)
    total = int(torch.load(reference, map_location="cpu", weights_only=True)["trainer"]["iteration"])

    work = root / f"{bundle}_chain"
    ckpt_dir = work / "models"
    result = ChainResult(bundle)
    previous = None
    for k in range(kills + 1):
        resume = k > 0
        if k == 0:
            nth = rng.randint(2, spec["saves"] - 1)  # a periodic save with an older complete one before it
            attempt = Attempt(f"kill during checkpoint write (save #{nth})")
            log = run_and_kill(bundle, work, data, attempt, resume, None, nth)
        elif k < kills:
            start_at = previous.complete_after_iteration if previous else 0
            at = rng.randint(start_at + 1, total - 1) if start_at + 1 <= total - 1 else total
            attempt = Attempt(f"kill at iteration {at}")
            log = run_and_kill(bundle, work, data, attempt, resume, at, None)
        else:
            attempt = Attempt("none (runs to the end)")
            log = run_to_end(bundle, work, data, resume=True)
        restored = _RESTORED.findall(log)
        attempt.resumed_from = Path(restored[-1]).name if restored else None
        if restored:
            attempt.resumed_iteration = _first_iteration(log) - 1
        attempt.last_logged_iteration = _last_iteration(log)
        complete = complete_checkpoints(ckpt_dir, prefix)
        if complete:
            attempt.complete_after_iteration, newest = complete[-1]
            attempt.complete_after = newest.name
        attempt.log_tail = log[-3000:]
        result.attempts.append(attempt)
        previous = attempt

    result.final_iteration = previous.complete_after_iteration
    result.rejected_files = sorted(p.name for p in ckpt_dir.glob("*.rejected"))
    result.leftover_tmp = sorted(p.name for p in ckpt_dir.glob(".*.tmp"))
    result.max_abs_diff = max_abs_diff(network_of(final_checkpoint(ckpt_dir, prefix)), network_of(reference))
    result.seconds = time.monotonic() - start
    return result


def table(results: list[ChainResult]) -> str:
    head = "| bundle | kill point | run interrupted | resumed from (iteration) | lost (recomputed iterations) | final max abs dweight vs uninterrupted |"
    lines = [head, "|" + "---|" * 6]
    for r in results:
        for i, a in enumerate(r.attempts):
            nxt = r.attempts[i + 1] if i + 1 < len(r.attempts) else None
            lost = f"{a.last_logged_iteration - nxt.resumed_iteration} (iterations {nxt.resumed_iteration + 1}-{a.last_logged_iteration})" if nxt and a.killed else "-"
            if a.partial_file:
                lost += f"; partial {a.partial_file} rejected"
            resumed = f"{a.resumed_from} ({a.resumed_iteration})" if a.resumed_from else "fresh start"
            diff = f"{r.max_abs_diff:.2e}" if nxt is None else ""
            lines.append(f"| {r.bundle} | {a.fault} | {'yes' if a.killed else 'no'} | {resumed} | {lost} | {diff} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="all", choices=["all", *BUNDLES])
    parser.add_argument("--kills", type=int, default=3, help="kills per bundle: one during a checkpoint write, the rest at random iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="keep runs here (default: a temporary folder)")
    args = parser.parse_args()
    import tempfile

    root = Path(args.workdir or tempfile.mkdtemp(prefix="openus_faults_"))
    results = []
    for bundle in BUNDLES if args.bundle == "all" else [args.bundle]:
        r = run_chain(bundle, root, kills=max(1, args.kills), seed=args.seed)
        results.append(r)
        print(f"{bundle}: {r.seconds:.0f} s, rejected {r.rejected_files}, leftover temp files {r.leftover_tmp}", flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
