"""The bundles served by MONAI Label 0.8.5 (``pip install -e ".[label]"``, see pyproject.toml).

One MONAI Label server per app, started as the bundle docs show, on 127.0.0.1 and a free port:

- MONAI Label's own ``monaibundle`` sample app (copied from the installed package with
  ``monailabel apps --download``, no network) serves ``openus_seg``: ``POST /infer/openus_seg`` returns a
  uint8 PNG mask at the study's size, equal to the bundle's own inference (``inference.json`` run in-process);
- this repository's ``monailabel_app`` serves ``openus_seg`` and ``openus_cls``: ``POST /train/openus_seg``
  trains one epoch on the labelled studies and writes a new ``models/model.pt``; ``POST /infer/openus_cls``
  returns the class probabilities, equal to the bundle's.

The bundles are copies whose ``models/model.pt`` was trained here for one epoch with ``configs/tiny.json``; their
``inference.json`` is the stock one (VMamba-S options): the served network is the one the checkpoint records.
Only ``train.json`` has ``tiny.json`` merged in, for the server's training round. MONAI Label runs in its own environment: ``OPENUS_MONAILABEL_PYTHON`` names its python
(``.ci/run`` makes it); without it, the current python when it has monailabel.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _helpers import run_bundle

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "monailabel_app"
TIMEOUT = 300  # s, per wait (the whole test takes ~150 s on 2 loaded cores)


def _label_python() -> str | None:
    exe = os.environ.get("OPENUS_MONAILABEL_PYTHON")
    if exe:
        return exe
    return sys.executable if importlib.util.find_spec("monailabel") is not None else None


PYTHON = _label_python()
pytestmark = pytest.mark.skipif(
    PYTHON is None,
    reason='MONAI Label is not installed: set OPENUS_MONAILABEL_PYTHON to the python of an environment with '
    'pip install -e ".[label]" (.ci/run makes one)',
)


# ----------------------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MONAI_LABEL_SESSION_PATH"] = str(tmp / "sessions")  # not ~/.cache
    return env


def _place_bundle(name: str, app: Path) -> Path:
    """A copy of ``bundles/<name>`` in ``<app>/model/<name>``: stock ``inference.json``, ``tiny.json`` merged into
    ``train.json`` (the server's training round), an empty ``models``."""
    from monai.bundle import ConfigParser

    dst = app / "model" / name
    shutil.copytree(REPO / "bundles" / name, dst, ignore=shutil.ignore_patterns("models", "eval", "__pycache__"))
    parser = ConfigParser()
    parser.read_config([str(dst / "configs" / "train.json"), str(dst / "configs" / "tiny.json")])
    ConfigParser.export_config_file(parser.config, str(dst / "configs" / "train.json"), indent=4)
    (dst / "models").mkdir()
    return dst


def _inference_parser(bundle: Path, **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    for k, v in overrides.items():
        parser[k] = v
    return parser


def _train_tiny(bundle: Path, data: Path, tmp: Path) -> dict:
    """``models/model.pt`` of one epoch with ``tiny.json`` (the repository's configs) on ``data``; its content."""
    configs = REPO / "bundles" / bundle.name / "configs"
    run_bundle(configs, ["train.json", "tiny.json"], dataset_dir=str(data), ckpt_dir=str(bundle / "models"),
               output_dir=str(tmp / f"{bundle.name}_train"), max_epochs=1)
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert state["network_config"]["args"]["encoder"]["dims"][0] == 16  # tiny, while inference.json says VMamba-S
    assert json.loads((bundle / "configs" / "inference.json").read_text())["encoder"] == "vmamba_small"
    return state


class Server:
    """``monailabel start_server`` as a subprocess in its own process group (killed whole in ``stop``)."""

    def __init__(self, app: Path, studies: Path, conf: list[str], tmp: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{app.name}_server.log"
        cmd = [PYTHON, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
               "--host", "127.0.0.1", "--port", str(self.port), *conf]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=tmp, env=_env(tmp), stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def wait_ready(self) -> dict:
        end = time.monotonic() + TIMEOUT
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"server exited with {self.proc.returncode}:\n{self.tail()}"
            try:
                return self.get("/info/")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        raise AssertionError(f"server not ready after {TIMEOUT} s:\n{self.tail()}")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=TIMEOUT) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict | None = None) -> tuple[str, bytes]:
        data = json.dumps(body).encode() if body is not None else b""
        req = urllib.request.Request(self.url + path, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
                return r.headers.get("Content-Type", ""), r.read()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"POST {path}: HTTP {e.code} {e.read()[:2000]!r}\n{self.tail()}") from None

    def stop(self) -> None:
        """SIGTERM to the process group (server and its training subprocess), SIGKILL after 15 s."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=15)
                end = time.monotonic() + 15
                while time.monotonic() < end:  # the group outlives its leader while children run
                    os.killpg(self.proc.pid, 0)
                    time.sleep(0.2)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        self.proc.wait(timeout=15)


# ----------------------------------------------------------------------------- the test
def test_monailabel_serves_and_trains_the_bundles(tmp_path):
    from openus_monai.data import synthesize_dataset

    # studies: four labelled demo images (labels/final/<same name>), one unlabelled image of odd size
    demo = tmp_path / "demo"
    synthesize_dataset(demo, n=12, seed=0, size=128)
    studies = tmp_path / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    images = sorted((demo / "images").glob("*.png"))
    for image in images[:4]:
        shutil.copy(image, studies / image.name)
        shutil.copy(demo / "masks" / image.name, studies / "labels" / "final" / image.name)
    query = studies / "query.png"
    Image.fromarray(np.asarray(Image.open(images[4]))[:100, :124]).save(query)
    query_shape = (100, 124)

    # apps: MONAI Label's monaibundle (from the installed package) and ours, with bundles trained with tiny.json
    stock = tmp_path / "apps" / "monaibundle"
    copy = subprocess.run([PYTHON, "-m", "monailabel.main", "apps", "--download", "--name", "monaibundle", "--output",
                           str(stock.parent)], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True)
    assert copy.returncode == 0 and (stock / "main.py").is_file(), copy.stdout + copy.stderr
    ours = tmp_path / "apps" / "openus"
    shutil.copytree(APP, ours, ignore=shutil.ignore_patterns("__pycache__", "model", "logs"))
    seg_stock = _place_bundle("openus_seg", stock)
    _train_tiny(seg_stock, demo, tmp_path)
    seg = _place_bundle("openus_seg", ours)
    shutil.copy(seg_stock / "models" / "model.pt", seg / "models" / "model.pt")
    cls = _place_bundle("openus_cls", ours)
    class_names = _train_tiny(cls, demo, tmp_path)["class_names"]
    first_weights = (seg / "models" / "model.pt").read_bytes()

    servers = [
        Server(stock, studies, ["--conf", "models", "openus_seg", "--conf", "zoo_source", "github",
                                "--conf", "sam2", "false"], tmp_path),
        Server(ours, studies, ["--conf", "models", "openus_seg,openus_cls"], tmp_path),
    ]
    try:
        stock_server, our_server = servers
        info = stock_server.wait_ready()
        assert info["models"]["openus_seg"]["type"] == "segmentation" and "openus_seg" in info["trainers"]
        info = our_server.wait_ready()
        assert info["models"]["openus_cls"]["type"] == "classification"
        assert set(info["trainers"]) == {"openus_seg"}

        # training: one epoch on the labelled studies, in the background while we infer
        _, body = our_server.post("/train/openus_seg", {"max_epochs": 1, "val_split": 0.25, "multi_gpu": False})
        assert json.loads(body)["status"] in ("SUBMITTED", "RUNNING")

        # segmentation (monaibundle app): a uint8 PNG at the study's size, the bundle's own mask
        kind, body = stock_server.post("/infer/openus_seg?image=query&output=image")
        assert kind == "image/png", kind
        (tmp_path / "served.png").write_bytes(body)
        served = Image.open(tmp_path / "served.png")
        assert served.format == "PNG" and served.mode == "L"
        mask = np.asarray(served)
        assert mask.dtype == np.uint8 and mask.shape == query_shape
        assert set(np.unique(mask).tolist()) <= {0, 1}
        parser = _inference_parser(seg_stock, dataset_dir=str(query), output_dir=str(tmp_path / "bundle_masks"), num_workers=0)
        parser.get_parsed_content("evaluator").run()
        expected = np.asarray(Image.open(tmp_path / "bundle_masks" / "query.png"))
        assert np.array_equal(mask, expected), f"{(mask != expected).mean():.3%} of pixels differ from the bundle's"

        # classification (our app): probabilities per class name, the bundle's own
        _, body = our_server.post("/infer/openus_cls?image=query&output=json")
        result = json.loads(body)
        probs = result["probabilities"]
        assert list(probs) == class_names and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert result["label"] == max(probs, key=probs.get) and result["index"] == class_names.index(result["label"])
        parser = _inference_parser(cls)
        net = parser.get_parsed_content("network_def").eval()
        net.load_state_dict(torch.load(cls / "models" / "model.pt", weights_only=True)["model"])
        x = parser.get_parsed_content("preprocessing")({"image": str(query)})["image"]
        with torch.no_grad():
            expected = torch.softmax(net(x[None].as_tensor()), dim=1)[0]
        assert np.allclose(list(probs.values()), expected.numpy(), atol=1e-5), (probs, expected)

        # training finished: a new model.pt that the network loads
        end = time.monotonic() + TIMEOUT
        while (status := our_server.get("/train/"))["status"] in ("SUBMITTED", "RUNNING"):
            assert time.monotonic() < end, f"training still running after {TIMEOUT} s"
            time.sleep(1)
        assert status["status"] == "DONE", "\n".join(status.get("details", []))[-4000:]
        trained = seg / "models" / "model.pt"
        assert trained.read_bytes() != first_weights, "training wrote no new models/model.pt"
        state = torch.load(trained, map_location="cpu", weights_only=True)
        assert set(state) == {"model", "network_config"}  # the bundle's format: weights + the network's record
        net = _inference_parser(seg).get_parsed_content("network_def")
        net.load_state_dict(state["model"])
        log = (ours / "logs" / "app.log").read_text(errors="replace")
        assert "Total Records for Training: 3" in log and "Epoch[1] Complete" in log
        assert f"Add Checkpoint Loader for Path: {trained}" in log  # fine-tunes the served model
    finally:
        for server in servers:
            server.stop()
    for server in servers:  # no orphans: the process groups are gone
        with pytest.raises(ProcessLookupError):
            os.killpg(server.proc.pid, 0)
