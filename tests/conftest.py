"""Test setup: the repository importable without installation, one thread per test process."""

import os
import sys
from pathlib import Path

# One thread per test process, and (through the environment) per bundle it launches: the test models are
# tiny, two xdist workers with two OpenMP threads each oversubscribe two cores (OpenMP's spinning makes that
# many times slower), and in-process and subprocess runs that are compared number for number agree on it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Triton (tests/test_scan_triton.py) runs in its interpreter on the CPU. It fixes whether its own library is
# interpreted when it is first imported, and torch imports it (torch._dynamo, where triton is installed) long
# before that test module is collected: so here, before torch. Nothing else in the suite uses Triton.
os.environ.setdefault("TRITON_INTERPRET", "1")
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------ the checkout stays clean
# Tests write to temporary folders only. The suite fails when it leaves files in the checkout that were not
# there before, ignored ones included (``bundles/*/eval/events.out.tfevents.*`` is ignored by git but is
# litter all the same); Python's and pytest's own caches do not count.
_CACHES = ("__pycache__/", ".pytest_cache/", ".egg-info/", ".pyc")


def _checkout_state() -> set[str] | None:
    import subprocess

    try:
        out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None  # not a git checkout (an sdist): nothing to compare
    # files created ("??" untracked, "!!" ignored); edits to tracked files are left out, since a developer may
    # be editing while the tests run
    return {line for line in out.stdout.splitlines() if line[:2] in ("??", "!!") and not any(c in line for c in _CACHES)}


def pytest_sessionstart(session):
    session.config._openus_checkout_before = _checkout_state()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_openus_checkout_before", None)
    after = _checkout_state()
    if before is None or after is None:
        return
    new = sorted(after - before)
    if new:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        text = "tests left files in the checkout (write to tmp_path instead):\n  " + "\n  ".join(new[:20])
        if reporter is not None:
            reporter.write_line(text, red=True)
        else:
            print(text, file=sys.stderr)
        session.exitstatus = 1
