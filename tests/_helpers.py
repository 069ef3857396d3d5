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


def scratch_outputs(overrides: dict) -> dict:
    """``overrides`` with ``output_dir`` and ``ckpt_dir`` in a new temporary folder where not given, so that a
    bundle parsed by a test never writes into the checkout (``bundles/*/eval``, ``bundles/*/models``)."""
    import tempfile

    missing = [k for k in ("output_dir", "ckpt_dir") if k not in overrides]
    if not missing:
        return dict(overrides)
    root = Path(tempfile.mkdtemp(prefix="openus_test_"))
    return {**{k: str(root / k) for k in missing}, **overrides}


def run_bundle(configs: Path, files: list[str], **overrides) -> None:
    """Run a bundle's configs (``configs/<files>``, merged in order) as ``monai.bundle run`` does, in-process."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=[str(configs / f) for f in files], meta_file=str(configs / "metadata.json"),
                              logging_file=False, workflow_type="train", **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
