"""``python -m monai.bundle run training ... --tracking mlflow`` on every bundle (tiny configs, CPU).

Each run is read back through ``mlflow.MlflowClient`` from the store MONAI 1.6.1 uses by default,
``<output_dir>/mlruns.db`` with artifacts under ``<output_dir>/mlruns``: one finished run, the bundle's
hyper-parameters as params, one finite value per epoch of every epoch metric, the model files as
artifacts (byte-identical to those in ``ckpt_dir``), and TensorBoard event files holding the same epoch means.

The commands are the ones bundles/*/docs/README.md show under "Experiment tracking" (plus temporary
folders and fewer epochs).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch

from _helpers import REPO, demo_dataset

TIMEOUT = 900  # seconds per bundle run; generous, the machine may be shared


@dataclass
class Case:
    """What one bundle's tracked run must show."""

    demo_images: int  # demo data set size (pretraining: tiny.json's demo_images)
    max_epochs: int
    overrides: dict[str, str]
    params: dict[str, str]  # expected MLflow params (string values)
    epoch_metrics: list[str]  # metrics logged once per epoch
    artifacts: list[str]  # files of ckpt_dir logged under the run's "models/"
    tensorboard: list[str] = field(default_factory=lambda: ["epoch_loss"])


CASES = {
    "openus_pretrain": Case(
        demo_images=16,
        max_epochs=2,
        overrides={"max_epochs": "2"},
        params={"max_epochs": "2", "epoch_length": "4", "base_lr": "0.005", "batch_size": "4", "world_size": "1",
                "mask_strategy": "self_adaptive", "out_dim": "128", "seed": "0"},
        epoch_metrics=["epoch_loss", "epoch_loss_cls", "epoch_loss_patch", "epoch_loss_rec_global", "epoch_loss_rec_local", "epoch_lr",
                       "monitor_entropy_ratio", "monitor_max_prototype_share", "monitor_feature_std"],  # the collapse monitor
        artifacts=["backbone.pt", "pretrain_final.pt"],
        tensorboard=["epoch_loss", "epoch_loss_cls", "epoch_lr"],
    ),
    "openus_seg": Case(
        demo_images=48,
        max_epochs=2,
        overrides={},
        params={"max_epochs": "2", "learning_rate": "0.0001", "batch_size": "4", "label_ratio": "1.0", "seed": "0",
                "encoder": "{'depths': [1, 1, 1, 1], 'dims': 16}"},
        epoch_metrics=["epoch_loss", "val_mean_dice", "val_iou"],
        artifacts=["model.pt"],
    ),
    "openus_cls": Case(
        demo_images=48,
        max_epochs=2,
        overrides={},
        params={"max_epochs": "2", "learning_rate": "0.0005", "batch_size": "8", "freeze_encoder": "False", "class_balance": "loss",
                "seed": "0"},
        epoch_metrics=["epoch_loss", "train_accuracy", "macro_f1", "accuracy", "auc", "balanced_accuracy"],
        artifacts=["model.pt"],
    ),
}


def bundle_env() -> dict[str, str]:
    """The test's environment for a bundle subprocess: the repository importable, one thread, MLflow's default store."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("MLFLOW_TRACKING_URI", None)  # would override the bundle's tracking_uri
    return env


def demo_data(folder: Path, n: int) -> Path:
    """The synthetic demo data set, written once before the bundles (or their ranks) read it."""
    return demo_dataset(folder, n=n)


def make_empty_mlflow_store(folder: Path) -> Path:
    """An MLflow SQLite store ``folder/mlruns.db`` with its tables created and nothing logged.

    Creating the tables (MLflow's schema migrations) takes 10-15 s on two busy cores; each test copies this
    file to ``<output_dir>/mlruns.db``, where the bundle's MLFlowHandler then finds an up-to-date empty store.
    """
    import mlflow

    path = folder / "mlruns.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="module")
def empty_mlflow_store(tmp_path_factory) -> Path:
    return make_empty_mlflow_store(tmp_path_factory.mktemp("mlflow_template"))


def read_run(output_dir: Path):
    """(client, the single run) of the default MONAI 1.6.1 store of ``output_dir``."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{output_dir / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("monai_experiment")
    assert experiment is not None, f"no MLflow experiment in {output_dir / 'mlruns.db'}"
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, f"expected one MLflow run, found {len(runs)}"
    return client, runs[0]


def check_epoch_history(client, run, names: list[str], max_epochs: int) -> None:
    """Every metric of ``names`` has exactly one finite value per epoch, at steps 1..max_epochs."""
    for name in names:
        history = client.get_metric_history(run.info.run_id, name)
        assert sorted(m.step for m in history) == list(range(1, max_epochs + 1)), f"{name}: steps {[m.step for m in history]}"
        assert all(math.isfinite(m.value) for m in history), f"{name}: {[m.value for m in history]}"


def check_artifacts(client, run, ckpt_dir: Path, output_dir: Path, names: list[str]) -> None:
    """The files are logged under ``models/``, stored in ``<output_dir>/mlruns`` and equal the checkpoints."""
    listed = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "models")}
    assert listed == set(names), listed
    root = Path(unquote(urlparse(run.info.artifact_uri).path))
    assert root.is_relative_to(output_dir / "mlruns"), root
    for name in names:
        assert (root / "models" / name).read_bytes() == (ckpt_dir / name).read_bytes(), name
        torch.load(root / "models" / name, map_location="cpu", weights_only=True)


def tensorboard_scalars(output_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """All scalars of the TensorBoard event files in ``output_dir``: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(output_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return scalars


@pytest.mark.parametrize("bundle", list(CASES))
def test_tracking_mlflow_logs_params_epoch_metrics_and_model(bundle, tmp_path, empty_mlflow_store):
    case = CASES[bundle]
    data = demo_data(tmp_path / "data", case.demo_images)
    ckpt_dir, output_dir = tmp_path / "models", tmp_path / "eval"
    output_dir.mkdir()
    shutil.copy(empty_mlflow_store, output_dir / "mlruns.db")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training",
           "--config_file", "['configs/train.json','configs/tiny.json']", "--tracking", "mlflow",
           "--dataset_dir", str(data), "--ckpt_dir", str(ckpt_dir), "--output_dir", str(output_dir)]
    for key, value in case.overrides.items():
        cmd += [f"--{key}", value]
    proc = subprocess.run(cmd, cwd=REPO / "bundles" / bundle, env=bundle_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{bundle} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"

    client, run = read_run(output_dir)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert {k: params.get(k) for k in case.params} == case.params
    check_epoch_history(client, run, case.epoch_metrics, case.max_epochs)
    assert client.get_metric_history(run.info.run_id, "train_loss"), "no iteration loss"
    check_artifacts(client, run, ckpt_dir, output_dir, case.artifacts)

    scalars = tensorboard_scalars(output_dir)
    for tag in case.tensorboard:
        assert [step for step, _ in scalars.get(tag, [])] == list(range(1, case.max_epochs + 1)), tag
        mlflow_values = [m.value for m in sorted(client.get_metric_history(run.info.run_id, tag), key=lambda m: m.step)]
        assert [v for _, v in scalars[tag]] == pytest.approx(mlflow_values, rel=1e-5), tag


def test_epoch_average_handler_means_and_nan_for_missing_key():
    """EpochAverageHandler on a bare Ignite engine: per-epoch means; a missing key makes that epoch NaN."""
    from ignite.engine import Engine, Events

    from openus_monai.handlers import EpochAverageHandler

    outputs = iter([{"loss": 1.0, "lr": 0.1}, {"loss": torch.tensor(3.0), "lr": 0.3}, {"loss": 5.0}, {"loss": 7.0, "lr": 0.7}])
    engine = Engine(lambda e, b: [next(outputs)])
    handler = EpochAverageHandler(["loss", "lr"])
    handler.attach(engine)
    seen = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(dict(e.state.metrics)))
    engine.run([0, 1], max_epochs=2)
    assert handler.names == ["epoch_loss", "epoch_lr"]
    assert seen[0] == pytest.approx({"epoch_loss": 2.0, "epoch_lr": 0.2})
    assert seen[1]["epoch_loss"] == pytest.approx(6.0) and math.isnan(seen[1]["epoch_lr"])
    with pytest.raises(ValueError, match="non-empty list"):
        EpochAverageHandler("loss")


def test_extras_handler_is_a_no_op_without_tracking(tmp_path):
    """MLflowExtrasHandler without an MLFlowHandler on the engine (no --tracking): nothing registered, no error."""
    from ignite.engine import Engine, Events

    from openus_monai.handlers import MLflowExtrasHandler

    engine = Engine(lambda e, b: [{"loss": 1.0}])
    extras = MLflowExtrasHandler(params={"lr": 1e-3}, artifacts=[str(tmp_path / "missing.pt")])
    extras.attach(engine)
    engine.run([0], max_epochs=1)
    assert extras.mlflow is None and extras.run_id is None
    assert not engine.has_event_handler(extras._log_artifacts, Events.COMPLETED)
