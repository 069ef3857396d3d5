"""Small helpers shared by the tests (not fixtures)."""

from __future__ import annotations

from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference"


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max|actual - expected| / max|expected|`` in float64 (0 when both are zero)."""
    actual, expected = actual.double(), expected.double()
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    return err / scale if scale > 0 else err


def demo_dataset(folder: Path, n: int = 48, size: int = 256) -> Path:
    """The synthetic demo data set written into ``folder`` (the bundles never write into a named folder)."""
    from openus_monai.data import synthesize_dataset

    synthesize_dataset(folder, n=n, seed=0, size=size)
    return Path(folder)
