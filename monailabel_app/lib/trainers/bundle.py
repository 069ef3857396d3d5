"""MONAI Label training of a segmentation bundle (``openus_seg``): MONAI Label's ``BundleTrainTask``, made
tolerant of the bundle's handler lists.

``BundleTrainTask`` (monailabel 0.8.5) looks for a ``CheckpointLoader`` by calling ``.get`` on every entry of
``train#handlers``, which fails on an ``"@id"`` reference entry, and calls ``os.path.exists(None)`` when a
request sets ``pretrained: false``. This task checks only dict entries and skips the loader when there is
nothing to load, and trains on the studies labelled with a mask only (class labels, ``.json`` files, are the
classification trainer's, :mod:`.classification`); everything else (datalist from the datastore's labelled
studies, ``max_epochs``, ``val_split``, device, the bundle's ``train.json`` run) is ``BundleTrainTask``'s.
"""

from __future__ import annotations

import logging
import os

from monai.handlers import CheckpointLoader
from monailabel.tasks.train.bundle import BundleTrainTask

from .labels import is_class_label

logger = logging.getLogger(__name__)


class OpenUSBundleTrainTask(BundleTrainTask):
    """``BundleTrainTask`` that accepts ``"@id"`` references in ``train#handlers`` and ``pretrained: false``."""

    def _fetch_datalist(self, request, datastore):
        """The studies labelled with a mask (``BundleTrainTask``'s datalist without the class labels)."""
        return [d for d in super()._fetch_datalist(request, datastore) if not is_class_label(d["label"])]

    def _load_checkpoint(self, model_pytorch, pretrained, train_handlers):
        """Fine-tune from ``model_pytorch`` (the bundle's ``models/model.pt``) when asked and present."""
        if not pretrained or not model_pytorch or not os.path.exists(model_pytorch):
            return
        if any(isinstance(t, dict) and t.get("_target_") == CheckpointLoader.__name__ for t in train_handlers):
            return
        logger.info(f"Add Checkpoint Loader for Path: {model_pytorch}")
        train_handlers.insert(
            0,
            {
                "_target_": CheckpointLoader.__name__,
                "load_path": model_pytorch,
                "load_dict": {self.model_dict_key: f"$@{self.const.key_network()}"},
                "strict": self.load_strict,
            },
        )
