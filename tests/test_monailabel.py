"""The bundles served by MONAI Label 0.8.5 (``pip install -e ".[label]"``, see pyproject.toml).

One MONAI Label server per app, started as the bundle docs show, on 127.0.0.1 and a free port:

- MONAI Label's own ``monaibundle`` sample app (copied from the installed package with
  ``monailabel apps --download``, no network) serves ``openus_seg``: ``POST /infer/openus_seg`` returns a
  uint8 PNG mask at the study's size, equal to the bundle's own inference (``inference.json`` run in-process);
- this repository's ``monailabel_app`` serves ``openus_seg`` and ``openus_cls``: 20 concurrent inference
  requests per model (``benchmarks/bench_monailabel_load.py``) all answer what a request alone answers for
  their image; ``POST /train/openus_seg`` trains one epoch on the studies labelled with a mask and writes a new
  ``models/model.pt``; ``POST /infer/openus_cls`` returns the class probabilities, equal to the bundle's;
  ``POST /train/openus_cls`` stops on a study whose class label (a JSON label saved with
  ``PUT /datastore/label``) is not one of the bundle's classes, naming it, and once relabelled trains one epoch
  on the class-labelled studies and writes a ``models/model.pt`` with the bundle's classes, in its order,
  which the server then serves.

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
from benchmarks.bench_monailabel_load import load_test, markdown_table

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "monailabel_app"
TIMEOUT = 300  # s, per wait (the whole test takes ~120 s on 2 loaded cores, ~45 s of it the load test and cls training)


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

    def put_label(self, image: str, content: bytes, filename: str = "label.json") -> dict:
        """``PUT /datastore/label?image=<image>&tag=final`` with ``content`` as the multipart field ``label``."""
        boundary = "openus-monai-test-boundary"
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="label"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n")
        body = head.encode() + content + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(f"{self.url}/datastore/label?image={image}&tag=final", data=body, method="PUT",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"PUT label {image}: HTTP {e.code} {e.read()[:2000]!r}\n{self.tail()}") from None

    def train(self, model: str, body: dict) -> dict:
        """``POST /train/<model>`` and the task's status once it is no longer submitted or running (polled)."""
        _, answer = self.post(f"/train/{model}", body)
        assert json.loads(answer)["status"] in ("SUBMITTED", "RUNNING")
        return self.wait_train()

    def wait_train(self) -> dict:
        end = time.monotonic() + TIMEOUT
        while (status := self.get("/train/"))["status"] in ("SUBMITTED", "RUNNING"):
            assert time.monotonic() < end, f"training still running after {TIMEOUT} s"
            time.sleep(1)
        return status

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
    import csv

    from openus_monai.data import synthesize_dataset

    # studies: four labelled demo images (labels/final/<same name>), one unlabelled image of odd size, and the
    # demo's non-benign images again as cls_<name> (their class labels are saved through the API below: no
    # benign one, so a class list taken from the labels alone would have the wrong size and order)
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
    with open(demo / "labels.csv", newline="") as f:
        demo_classes = {Path(r["image"]).stem: r["label"] for r in csv.DictReader(f)}
    class_studies = {f"cls_{image.stem}": demo_classes[image.stem] for image in images
                     if demo_classes[image.stem] != "benign"}
    for study in class_studies:
        shutil.copy(demo / "images" / f"{study[4:]}.png", studies / f"{study}.png")
    assert len(class_studies) == 8 and set(class_studies.values()) == {"malignant", "normal"}

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
    assert class_names == ["benign", "malignant", "normal"]
    first_weights = (seg / "models" / "model.pt").read_bytes()
    first_cls_weights = (cls / "models" / "model.pt").read_bytes()

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
        assert set(info["trainers"]) == {"openus_seg", "openus_cls"}

        # load test (before any training changes the weights): 20 concurrent requests per model, each answer
        # equal to the answer of a request alone for its image
        load_images = ["query", images[0].stem, images[1].stem, next(iter(class_studies))]
        rows = [load_test(our_server.url, model, load_images, requests=20, concurrency=20)
                for model in ("openus_seg", "openus_cls")]
        print("\n" + markdown_table(rows))
        for row in rows:
            assert row["all_correct"] and row["correct"] == 20, (row["model"], row["wrong"])
            assert 0 < row["p50"] <= row["p90"] <= row["max"] < TIMEOUT
            answers = set(row["reference"].values())
            assert len(answers) > 1, f"{row['model']}: every image got the same answer"
        seg_answers, cls_answers = (row["reference"] for row in rows)

        # training: one epoch on the studies labelled with a mask, in the background while we infer
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
        (tmp_path / "ours.png").write_bytes(seg_answers["query"])  # our app's answer in the load test: the same
        assert np.array_equal(np.asarray(Image.open(tmp_path / "ours.png")), expected)

        # classification (our app): probabilities per class name, the bundle's own
        _, body = our_server.post("/infer/openus_cls?image=query&output=json")
        result = json.loads(body)
        probs = result["probabilities"]
        assert list(probs) == class_names and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert result["label"] == max(probs, key=probs.get) and result["index"] == class_names.index(result["label"])
        assert json.loads(cls_answers["query"])["probabilities"] == probs
        parser = _inference_parser(cls)
        net = parser.get_parsed_content("network_def").eval()
        net.load_state_dict(torch.load(cls / "models" / "model.pt", weights_only=True)["model"])
        preprocessing = parser.get_parsed_content("preprocessing")
        x = preprocessing({"image": str(query)})["image"]
        with torch.no_grad():
            expected = torch.softmax(net(x[None].as_tensor()), dim=1)[0]
        assert np.allclose(list(probs.values()), expected.numpy(), atol=1e-5), (probs, expected)

        # segmentation training finished: a new model.pt that the network loads
        status = our_server.wait_train()
        assert status["status"] == "DONE", "\n".join(status.get("details", []))[-4000:]
        trained = seg / "models" / "model.pt"
        assert trained.read_bytes() != first_weights, "training wrote no new models/model.pt"
        state = torch.load(trained, map_location="cpu", weights_only=True)
        assert set(state) == {"model", "network_config"}  # the bundle's format: weights + the network's record
        net = _inference_parser(seg).get_parsed_content("network_def")
        net.load_state_dict(state["model"])
        log = (ours / "logs" / "app.log").read_text(errors="replace")
        assert "Total Records for Training: 3" in log and "Epoch[1] Complete" in log  # the masks only
        assert f"Add Checkpoint Loader for Path: {trained}" in log  # fine-tunes the served model

        # class labels through the datastore API; one is not a class of the bundle: training stops, naming it
        bad = sorted(class_studies)[0]
        for study, name in class_studies.items():
            label = "cyst" if study == bad else name
            saved = our_server.put_label(study, json.dumps({"label": label}).encode())
            assert saved["label"] == study
            assert (studies / "labels" / "final" / f"{study}.json").is_file()
        train_request = {"max_epochs": 1, "val_split": 0.25, "multi_gpu": False}
        status = our_server.train("openus_cls", train_request)
        details = "\n".join(status.get("details", []))
        assert status["status"] == "ERROR", details[-4000:]
        assert f"study '{bad}' is labelled 'cyst', which is not one of the model's classes {class_names}" in details
        assert (cls / "models" / "model.pt").read_bytes() == first_cls_weights

        # relabelled: one epoch on the 8 class-labelled studies, the bundle's classes in its order
        our_server.put_label(bad, json.dumps({"label": class_studies[bad]}).encode())
        status = our_server.train("openus_cls", train_request)
        assert status["status"] == "DONE", "\n".join(status.get("details", []))[-4000:]
        trained = cls / "models" / "model.pt"
        assert trained.read_bytes() != first_cls_weights, "training wrote no new models/model.pt"
        state = torch.load(trained, map_location="cpu", weights_only=True)
        assert set(state) == {"model", "class_names", "network_config"} and state["class_names"] == class_names
        log = (ours / "logs" / "app.log").read_text(errors="replace")
        assert "Class labels: 8 studies, {'benign': 0, 'malignant': 4, 'normal': 4}" in log
        assert "Total Records for Training: 6" in log
        assert f"Add Checkpoint Loader for Path: {trained}" in log

        # the server serves the new weights
        net = _inference_parser(cls).get_parsed_content("network_def").eval()
        net.load_state_dict(state["model"])
        with torch.no_grad():
            expected = torch.softmax(net(x[None].as_tensor()), dim=1)[0]
        _, body = our_server.post("/infer/openus_cls?image=query&output=json")
        probs = json.loads(body)["probabilities"]
        assert list(probs) == class_names and probs != json.loads(cls_answers["query"])["probabilities"]
        assert np.allclose(list(probs.values()), expected.numpy(), atol=1e-5), (probs, expected)
    finally:
        for server in servers:
            server.stop()
    for server in servers:  # no orphans: the process groups are gone
        with pytest.raises(ProcessLookupError):
            os.killpg(server.proc.pid, 0)
