"""Test setup: the repository importable without installation, one thread per xdist worker."""

import os
import sys
from pathlib import Path

# Under pytest-xdist each worker (and each bundle it launches) gets one thread: two workers with two
# OpenMP threads each on two cores oversubscribe them, and OpenMP's spinning makes that many times slower.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
