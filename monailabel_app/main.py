"""MONAI Label app for the OpenUS-MONAI bundles (``openus_seg`` and ``openus_cls``).

Like MONAI Label's ``monaibundle`` sample app, with three differences:

- classification bundles (``format: "classes"`` in their metadata, as ``openus_cls``) are served by
  :class:`lib.infers.BundleClassificationInferTask` (no ``Restored`` post transform, JSON result with the
  class probabilities);
- every bundle gets a trainer: segmentation bundles train on the studies whose final label is a mask, a
  classification bundle on those whose final label is a class label, a JSON file ``{"label": "<class name>"}``
  (:mod:`lib.trainers.labels`; :class:`lib.trainers.OpenUSClassificationTrainTask` keeps the bundle's classes
  and their order, and stops on a class name that is not one of them, naming the study);
- bundles are only read from ``<app>/model/<name>`` (copy or link them there, with ``models/model.pt``):
  nothing is downloaded, whatever ``zoo_source`` says.

Both trainers are MONAI Label's ``BundleTrainTask`` accepting ``"@id"`` references among the bundle's
``train#handlers`` (:class:`lib.trainers.OpenUSBundleTrainTask`); each writes a new ``models/model.pt`` that
the served network reloads::

    monailabel start_server --app monailabel_app --studies DIR --conf models openus_seg,openus_cls
    curl -f -X PUT "http://127.0.0.1:8000/datastore/label?image=STUDY&tag=final" -F "label=@label.json"
    curl -f -X POST "http://127.0.0.1:8000/train/openus_cls" -H "Content-Type: application/json" \\
        -d '{"max_epochs": 10, "val_split": 0.2, "multi_gpu": false}'
"""

import logging
import os
from typing import Dict

from lib.infers import BundleClassificationInferTask, is_classification_bundle
from lib.trainers import OpenUSBundleTrainTask, OpenUSClassificationTrainTask

import monailabel
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.utils.others.generic import strtobool

logger = logging.getLogger(__name__)


def local_bundles(app_dir: str, conf: Dict[str, str]) -> Dict[str, str]:
    """The bundles named in ``--conf models a,b``: ``{name: <app_dir>/model/<name>}``.

    Raises:
        ValueError: no model named, or a named bundle folder is missing.
    """
    names = [m.strip() for m in conf.get("models", "").split(",") if m.strip()]
    if not names:
        raise ValueError("no bundle named: start the server with --conf models openus_seg[,openus_cls]")
    bundles = {n: os.path.join(app_dir, "model", n) for n in names}
    missing = [p for p in bundles.values() if not os.path.isdir(p)]
    if missing:
        raise ValueError(f"bundle folder(s) {missing} not found: copy the bundles (with models/model.pt) there")
    return bundles


class MyApp(MONAILabelApp):
    """The app: one infer task and one train task per bundle."""

    def __init__(self, app_dir, studies, conf):
        self.models = local_bundles(app_dir, conf)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"MONAILabel - OpenUS-MONAI bundles ({monailabel.__version__})",
            description="OpenUS ultrasound segmentation and classification bundles",
            version=monailabel.__version__,
        )

    def init_infers(self) -> Dict[str, InferTask]:
        infers: Dict[str, InferTask] = {}
        for name, path in self.models.items():
            if is_classification_bundle(path):
                task = BundleClassificationInferTask(path, self.conf)
            else:
                task = BundleInferTask(path, self.conf)
            if not task.is_valid():
                raise ValueError(f"bundle {path} cannot be served: it needs configs/inference.json and models/model.pt")
            logger.info(f"+++ Adding Inferer:: {name} => {task}")
            infers[name] = task
        return infers

    def init_trainers(self) -> Dict[str, TrainTask]:
        trainers: Dict[str, TrainTask] = {}
        if strtobool(self.conf.get("skip_trainers", "false")):
            return trainers
        for name, path in self.models.items():
            if is_classification_bundle(path):
                task = OpenUSClassificationTrainTask(path, self.conf)
            else:
                task = OpenUSBundleTrainTask(path, self.conf)
            if task.is_valid():
                logger.info(f"+++ Adding Trainer:: {name} => {task}")
                trainers[name] = task
        return trainers

    def init_strategies(self) -> Dict[str, Strategy]:
        return {"random": Random(), "first": First()}
