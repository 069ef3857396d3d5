"""Test setup: the repository importable without installation, one thread per test process."""

import os
import sys
from pathlib import Path

# One thread per test process, and (through the environment) per bundle it launches: the test models are
# tiny, two xdist workers with two OpenMP threads each oversubscribe two cores (OpenMP's spinning makes that
# many times slower), and in-process and subprocess runs that are compared number for number agree on it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
