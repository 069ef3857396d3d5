"""Options that can be switched off can be switched off from the command line.

MONAI's runner drops overrides whose value is None (``--max_train_images None`` leaves ``tiny.json``'s limit of
12 in place, silently), so the configs read such options through ``openus_monai.bundle.optional``: ``none`` (or
``null``, ``off``) means off, and ``0`` where the README says so. Checked end to end through
``python -m monai.bundle run`` with the segmentation bundle's ``train.json`` + ``tiny.json``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from _helpers import REPO


def test_optional_reads_off_words():
    from openus_monai.bundle import optional

    assert [optional(v) for v in (None, "none", "None", "NULL", " off ")] == [None] * 5
    assert [optional(v) for v in (0, 12, "", "vmamba_small", False)] == [0, 12, "", "vmamba_small", False]


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    from openus_monai.data import synthesize_dataset

    root = tmp_path_factory.mktemp("cli_data")
    synthesize_dataset(root, n=24, seed=0, size=64)
    (root / "synthesis.json").unlink()
    return root


def train_images(seg_data, tmp_path, *override: str) -> int:
    """How many training images ``train#dataset`` holds after the command-line ``override``."""
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps({"initialize": [], "run": ["$print('N_TRAIN', len(@train#dataset#data))"]}))
    configs = REPO / "bundles" / "openus_seg" / "configs"
    files = [str(configs / "train.json"), str(configs / "tiny.json"), str(probe)]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(files), "--dataset_dir", str(seg_data),
           "--output_dir", str(tmp_path / "eval"), "--ckpt_dir", str(tmp_path / "models"), *override]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    found = re.search(r"N_TRAIN (\d+)", proc.stdout)
    assert proc.returncode == 0 and found, (proc.stdout + proc.stderr)[-3000:]
    return int(found.group(1))


def test_max_train_images_can_be_lifted_from_the_command_line(seg_data, tmp_path):
    from openus_monai.data import build_datalist

    everything = len(build_datalist(seg_data, "segmentation", seed=0, val_fraction=0.1)["training"])
    assert everything > 12
    assert train_images(seg_data, tmp_path, "--max_train_images", "None") == 12  # MONAI drops None: tiny.json's limit stays
    assert train_images(seg_data, tmp_path, "--max_train_images", "none") == everything
    assert train_images(seg_data, tmp_path, "--max_train_images", "0") == everything
