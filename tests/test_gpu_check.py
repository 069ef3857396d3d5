"""``benchmarks/gpu_check.py``'s dry run, in-process on the CPU: every section is recorded, every exactness check
passes, and a failing case or an exhausted time budget is recorded without stopping the run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks import gpu_check
from openus_monai.networks.ops import scan_triton
from openus_monai.networks.ops.scan_cuda import HAS_MAMBA_SSM

GRADIENTS = {"y", "grad_u", "grad_delta", "grad_A", "grad_B", "grad_C", "grad_D", "grad_delta_bias"}


def dry_run(out: Path, *args: str) -> tuple[dict, str]:
    """Run ``gpu_check --dry-run --in-process`` into ``out``; its JSON and Markdown."""
    assert gpu_check.main(["--dry-run", "--in-process", "--out", str(out), *args]) == 0
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def sections_of(data: dict, backend: str) -> dict[str, dict]:
    return {s["section"]: s for s in data["sections"] if s["backend"] == backend}


def test_dry_run_records_every_section_and_exactness_passes(tmp_path):
    data, md = dry_run(tmp_path, "--backends", "torch")
    assert data["meta"]["dry_run"] and data["environment"]["device"] == "cpu"
    sections = sections_of(data, "torch")
    assert set(sections) == {"exactness_scan", "exactness_cross", "exactness_encoder", "throughput", "pretrain"}
    assert all(s["status"] == "ok" for s in sections.values()), {k: s["status"] for k, s in sections.items()}
    exact = [r for name, s in sections.items() if name.startswith("exactness") for r in s["rows"]]
    assert len(exact) == len(gpu_check.DRY.scan_cases) + len(gpu_check.DRY.cross_cases) + 1
    for row in exact:
        assert row["status"] == "pass" and row["max_rel_err"] <= row["tolerance"], row
    for row in sections["exactness_scan"]["rows"]:  # the output and the gradient of every input of the contract
        assert set(row["errors"]) == GRADIENTS
    assert {"grad_x", "grad_A_logs", "grad_Ds", "grad_dt_projs_bias"} <= set(sections["exactness_cross"]["rows"][0]["errors"])
    speed = sections["throughput"]["rows"] + sections["pretrain"]["rows"]
    assert [r["kind"] for r in speed] == ["inference", "training", "pretrain"]
    assert all(r["status"] == "ok" and r["images_per_s"] > 0 for r in speed)
    assert any(s["backend"] == "mamba_ssm" and s["status"] == "skipped" for s in data["sections"]) == (not HAS_MAMBA_SSM)
    assert "DRY RUN" in md and "| exactness_scan | torch | ok |" in md and "n/a (dry run)" in md


@pytest.mark.skipif(not scan_triton.HAS_TRITON, reason="triton is not installed (pip install triton)")
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="the dry run needs Triton's interpreter (TRITON_INTERPRET=1)")
def test_dry_run_triton_exactness(tmp_path):
    data, _ = dry_run(tmp_path, "--backends", "triton", "--sections", "exactness")
    sections = sections_of(data, "triton")
    assert set(sections) == {"exactness_scan", "exactness_cross", "exactness_encoder"}
    for section in sections.values():
        assert section["status"] == "ok"
        assert all(r["status"] == "pass" for r in section["rows"]), section["rows"]


def test_a_failing_case_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(gpu_check, "throughput_case", broken)
    data, md = dry_run(tmp_path, "--backends", "torch", "--sections", "throughput", "pretrain")
    sections = sections_of(data, "torch")
    assert sections["throughput"]["status"] == "error"
    assert {r["error"]["type"] for r in sections["throughput"]["rows"]} == {"RuntimeError"}
    assert "kernel exploded" in sections["throughput"]["rows"][0]["error"]["message"]
    assert sections["pretrain"]["status"] == "ok"
    assert "ERROR RuntimeError: kernel exploded" in md


def test_an_exhausted_budget_skips_every_case(tmp_path):
    data, md = dry_run(tmp_path, "--backends", "torch", "--budget-s", "0")
    sections = sections_of(data, "torch")
    assert sections and all(s["status"] == "skipped" for s in sections.values())
    assert all(r["reason"].startswith("time budget") for s in sections.values() for r in s["rows"])
    assert data["environment"]["torch"] and "skipped: time budget" in md
