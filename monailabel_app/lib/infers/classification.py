"""MONAI Label inference for a classification bundle (``openus_cls``): class probabilities for one image.

MONAI Label's stock ``BundleInferTask`` treats every bundle as a segmentation one unless told otherwise: it
appends a ``Restored`` transform (resizes the prediction back to the image, which fails on a class vector) and
writes the prediction as a label image. This task runs the same bundle pipeline (``inference.json``'s
``network_def``, ``preprocessing``, ``inferer``, ``postprocessing``; weights from ``models/model.pt``) as a
classification task, with ``add_post_restore=False``, and returns the probabilities as JSON.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask

logger = logging.getLogger(__name__)


def is_classification_bundle(path: str) -> bool:
    """Whether the bundle at ``path`` outputs class scores (``format: "classes"`` in its metadata)."""
    meta_file = os.path.join(path, "configs", "metadata.json")
    try:
        with open(meta_file) as f:
            outputs = json.load(f)["network_data_format"]["outputs"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{meta_file}: cannot read network_data_format.outputs ({e})") from e
    return next(iter(outputs.values())).get("format") == "classes"


def bundle_class_names(path: str, config: Any = None) -> list[str]:
    """The classifier's class names in output order (the served network's, and the order training keeps).

    ``class_names`` of the bundle's ``inference.json`` (``config``, else parsed here; the bundle reads them from
    ``models/model.pt``) when it defines them, else the metadata's ``channel_def`` in channel order.
    """
    if config is None:
        from monai.bundle import ConfigParser

        config = ConfigParser()
        config.read_config(os.path.join(path, "configs", "inference.json"))
        config["bundle_root"] = path
    if "class_names" in config:
        return [str(n) for n in config.get_parsed_content("class_names")]
    meta_file = os.path.join(path, "configs", "metadata.json")
    with open(meta_file) as f:
        channels = next(iter(json.load(f)["network_data_format"]["outputs"].values()))["channel_def"]
    return [str(n) for _, n in sorted(channels.items(), key=lambda kv: int(kv[0]))]


class BundleClassificationInferTask(BundleInferTask):
    """A classification bundle served by MONAI Label.

    The class names are the checkpoint's (``class_names`` in the bundle's ``inference.json``, read from
    ``models/model.pt``) when the bundle defines them, else the metadata's ``channel_def``.

    Args:
        path: the bundle folder (``configs/inference.json``, ``configs/metadata.json``, ``models/model.pt``).
        conf: the app's ``--conf`` settings.
        kwargs: passed to ``BundleInferTask``.

    The result (``POST /infer/<model>?output=json``) is
    ``{"label": NAME, "index": I, "probabilities": {NAME: p, ...}, "prediction": [{"idx", "label", "score"}]}``.
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        kwargs.setdefault("type", InferType.CLASSIFICATION)
        super().__init__(path, conf, add_post_restore=False, **kwargs)
        if not self.is_valid():
            return
        names = bundle_class_names(self.bundle_path, self.bundle_config)
        self.class_names = names
        self.labels = {n: i for i, n in enumerate(names)}

    def writer(self, data: dict[str, Any], extension: Any = None, dtype: Any = None) -> tuple[None, dict[str, Any]]:
        """No label file: the class probabilities (``data[pred]``, ``[num_classes]``, after softmax) as JSON."""
        scores = [float(s) for s in data[self.output_label_key].detach().cpu().reshape(-1)]
        if len(scores) != len(self.class_names):
            raise ValueError(
                f"{self.bundle_path}: the network gave {len(scores)} scores for {len(self.class_names)} classes"
            )
        best = max(range(len(scores)), key=scores.__getitem__)
        prediction = [{"idx": i, "label": n, "score": s} for i, (n, s) in enumerate(zip(self.class_names, scores))]
        return None, {
            "label": self.class_names[best],
            "index": best,
            "probabilities": dict(zip(self.class_names, scores)),
            "prediction": prediction,
        }
