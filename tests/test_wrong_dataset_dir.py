"""A wrong ``dataset_dir`` is one clear error for every bundle and workflow, and the folder is left as it was.

Demo phantoms are generated only when no ``dataset_dir`` is given (or ``demo`` is asked for by name), never
into a folder the user named. The checks run in-process through MONAI's config parser (the error comes before
any training); one subprocess checks what a user of ``python -m monai.bundle run`` sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigParser
from PIL import Image

from openus_monai.bundle.errors import unwrap_config_error

from _helpers import REPO

WORKFLOWS = {
    "pretrain-train": ("openus_pretrain", ["train.json", "tiny.json"]),
    "seg-train": ("openus_seg", ["train.json", "tiny.json"]),
    "seg-evaluate": ("openus_seg", ["train.json", "tiny.json", "evaluate.json"]),
    "seg-inference": ("openus_seg", ["inference.json", "tiny.json"]),
    "cls-train": ("openus_cls", ["train.json", "tiny.json"]),
    "cls-evaluate": ("openus_cls", ["train.json", "tiny.json", "evaluate.json"]),
    "cls-inference": ("openus_cls", ["inference.json", "tiny.json"]),
}


def _folder(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / f"user_{kind}"
    if kind != "missing":
        folder.mkdir()
    if kind == "unlabeled":  # images, but neither masks nor classes
        for i in range(3):
            Image.fromarray(np.full((32, 32), 40 * i, np.uint8)).save(folder / f"scan_{i}.png")
    if kind == "text":
        (folder / "notes.txt").write_text("my notes")
        (folder / "sub").mkdir()
        (folder / "sub" / "readme.md").write_text("# not an image")
    return folder


def _snapshot(folder: Path) -> dict[str, bytes] | None:
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(folder.rglob("*"))}


CASES = [(w, k) for w in sorted(WORKFLOWS) for k in ("missing", "empty", "text")]
CASES += [(w, "unlabeled") for w in sorted(WORKFLOWS) if w.endswith(("train", "evaluate")) and not w.startswith("pretrain")]


@pytest.mark.parametrize("workflow,kind", CASES)
def test_wrong_dataset_dir_is_one_clear_error(workflow, kind, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENUS_MONAI_DEMO_DIR", str(tmp_path / "demo_cache"))  # must stay unused
    bundle, configs = WORKFLOWS[workflow]
    folder = _folder(tmp_path, kind)
    before = _snapshot(folder)
    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles" / bundle / "configs" / c) for c in configs])
    parser.update({"dataset_dir": str(folder), "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "out")})
    with pytest.raises(Exception) as info:
        for _ in parser.get_parsed_content("initialize"):
            pass
        parser.get_parsed_content("run")
    original, _ = unwrap_config_error(info.value)
    assert isinstance(original, (FileNotFoundError, ValueError)), repr(original)
    assert str(folder) in str(original), str(original)
    assert _snapshot(folder) == before, "the user's folder was changed"
    assert not (tmp_path / "demo_cache").exists(), "demo data generated in place of the named folder"


def test_cli_shows_the_original_error_last(tmp_path):
    folder = _folder(tmp_path, "text")
    bundle = REPO / "bundles" / "openus_seg"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env["OPENUS_MONAI_DEMO_DIR"] = str(tmp_path / "demo_cache")
    env.pop("OPENUS_MONAI_FULL_TRACEBACK", None)
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "['configs/inference.json','configs/tiny.json']",
         "--dataset_dir", str(folder), "--output_dir", str(tmp_path / "out"), "--ckpt_dir", str(tmp_path / "models")],
        cwd=bundle, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "DatasetNotFoundError" in last and str(folder) in last, proc.stderr[-3000:]
    assert "Failed to evaluate" not in last and len(proc.stderr.splitlines()) < 40, proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "sub"]
