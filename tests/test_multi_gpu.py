"""Every bundle's ``configs/multi_gpu_train.json`` under torchrun: 2 processes, gloo on CPU.

The command is the one bundles/*/docs/README.md show under "Multi-GPU" (plus temporary folders, one
epoch and ``--tracking mlflow``)::

    torchrun --standalone --nproc_per_node 2 -m monai.bundle run training \\
        --config_file "['configs/train.json','configs/multi_gpu_train.json','configs/tiny.json']" --dist_backend gloo

Each rank gets its own ``ckpt_dir`` and ``output_dir`` (an expression on ``RANK``), so that anything rank 1
writes would show: only rank 0 may write checkpoints, TensorBoard files and MLflow records, and rank 1 logs
nothing below WARNING once the process group is up. The checkpoints load with ``weights_only=True`` and
carry no ``module.`` (DDP) prefix. Cross-rank numerical agreement of pretraining is
tests/test_distributed_consistency.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from test_mlflow_tracking import bundle_env, check_epoch_history, demo_data, make_empty_mlflow_store, read_run

from _helpers import REPO

TIMEOUT = 900
COMMAND = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
CONFIGS = "['configs/train.json','configs/multi_gpu_train.json','configs/tiny.json']"
# MONAI's patch_bundle_tracking exports the executed config to output_dir in every process, before the
# bundle's own code runs (so before it knows its rank); that file is the one thing rank 1 may write.
MONAI_CONFIG_EXPORT = re.compile(r"config_\d{8}_\d{6}\.json")
# the one INFO record a rank logs before the config's `initialize` (ConfigWorkflow.__init__)
BEFORE_INITIALIZE = "Setting logging properties based on config"


@dataclass
class Case:
    demo_images: int
    models: dict[str, str | None]  # file in ckpt_dir -> key of its model state (None: the file is the state)
    epoch_metric: str  # an epoch-level metric rank 0 sends to MLflow


CASES = {
    "openus_pretrain": Case(16, {"pretrain_final.pt": "network", "backbone.pt": "state_dict"}, "epoch_loss_cls"),
    "openus_seg": Case(48, {"model.pt": "model"}, "val_mean_dice"),
    "openus_cls": Case(48, {"model.pt": "model"}, "macro_f1"),
}


@pytest.fixture(scope="module")
def empty_mlflow_store(tmp_path_factory) -> Path:
    return make_empty_mlflow_store(tmp_path_factory.mktemp("mlflow_template"))


def per_rank(path: Path) -> str:
    """A config expression: ``path`` on rank 0, ``path_rank1`` on rank 1."""
    return f"$'{path}' if os.environ['RANK'] == '0' else '{path}_rank1'"


def rank_logs(log_dir: Path, rank: int) -> str:
    """stdout and stderr of one rank (torchrun --log-dir ... --redirects 3)."""
    files = sorted(log_dir.glob(f"*/attempt_0/{rank}/std*.log"))
    assert files, f"no torchrun logs of rank {rank} in {log_dir}"
    return "".join(f.read_text(errors="replace") for f in files)


@pytest.mark.parametrize("bundle", list(CASES))
def test_multi_gpu_config_two_gloo_processes(bundle, tmp_path, empty_mlflow_store):
    case = CASES[bundle]
    data = demo_data(tmp_path / "data", case.demo_images)  # before the ranks, which would both write it
    ckpt_dir, output_dir, log_dir = tmp_path / "models", tmp_path / "eval", tmp_path / "logs"
    output_dir.mkdir()
    shutil.copy(empty_mlflow_store, output_dir / "mlruns.db")  # see test_mlflow_tracking.make_empty_mlflow_store
    cmd = [sys.executable, *COMMAND, "--log-dir", str(log_dir), "--redirects", "3",
           "-m", "monai.bundle", "run", "training", "--config_file", CONFIGS, "--dist_backend", "gloo",
           "--tracking", "mlflow", "--max_epochs", "1", "--dataset_dir", str(data),
           "--ckpt_dir", per_rank(ckpt_dir), "--output_dir", per_rank(output_dir)]
    proc = subprocess.run(cmd, cwd=REPO / "bundles" / bundle, env=bundle_env(), capture_output=True, text=True, timeout=TIMEOUT)
    rank0, rank1 = rank_logs(log_dir, 0), rank_logs(log_dir, 1)
    assert proc.returncode == 0, f"{bundle} failed:\n{proc.stderr[-2000:]}\n--- rank 0\n{rank0[-4000:]}\n--- rank 1\n{rank1[-4000:]}"

    # rank 0 alone writes: nothing in rank 1's folders but MONAI's config export
    written_by_rank1 = [p for p in tmp_path.glob("*_rank1/**/*") if p.is_file()]
    assert all(MONAI_CONFIG_EXPORT.fullmatch(p.name) for p in written_by_rank1), written_by_rank1
    events = list(output_dir.glob("events.out.tfevents.*"))
    assert events and len({e.name.split(".")[-2] for e in events}) == 1, f"TensorBoard files of several processes: {events}"

    # rank 1 logs at WARNING level from `initialize` on; rank 0 logs the training
    info1 = [line for line in rank1.splitlines() if " - INFO - " in line and BEFORE_INITIALIZE not in line]
    assert not info1, "INFO records on rank 1:\n" + "\n".join(info1[:10])
    assert "Epoch[1] Metrics" in rank0

    # one MLflow run (rank 0's), one value per epoch
    client, run = read_run(output_dir)
    check_epoch_history(client, run, [case.epoch_metric], max_epochs=1)
    assert {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "models")} == set(case.models)

    # the checkpoints: weights only, no DDP prefix
    for name, key in case.models.items():
        state = torch.load(ckpt_dir / name, map_location="cpu", weights_only=True)
        state = state if key is None else state[key]
        assert state and not any(k.startswith("module.") for k in state), f"{name}: {list(state)[:3]}"
    if bundle == "openus_pretrain":
        final = torch.load(ckpt_dir / "pretrain_final.pt", map_location="cpu", weights_only=True)
        assert final["trainer"]["iteration"] == 2  # 16 images / (2 ranks x batch 4), one epoch
    assert not list(ckpt_dir.glob(".*.tmp")), "partial checkpoint writes left behind"
