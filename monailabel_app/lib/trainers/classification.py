"""MONAI Label training of a classification bundle (``openus_cls``) on the class labels in the datastore.

The datalist is every study whose final label is a class label (``{"label": "<class name>"}``, see
:mod:`.labels`), with the class index in the served network's order (:func:`lib.infers.bundle_class_names`):
training keeps the bundle's classes and their order whatever subset of them the studies hold, so the new
``models/model.pt`` has the served network's head and class names. A class name that is not one of the
bundle's stops the training before it starts, with an error naming the study and the label (no study is
skipped silently: a mislabelled study is a labelling error to fix). The run itself (validation split,
``max_epochs``, fine-tuning from the served ``models/model.pt``, the bundle's ``train.json``) is
:class:`~lib.trainers.bundle.OpenUSBundleTrainTask`'s.
"""

from __future__ import annotations

import logging
from collections import Counter

from lib.infers import bundle_class_names

from .bundle import OpenUSBundleTrainTask
from .labels import is_class_label, read_class_label, study_id

logger = logging.getLogger(__name__)


def class_datalist(datalist: list[dict], class_names: list[str]) -> list[dict]:
    """``{"image", "label": class index}`` for the studies of ``datalist`` (``datastore.datalist()``) whose
    final label is a class label; studies labelled with a mask are left out.

    Raises:
        ValueError: a class label is unreadable or names a class not in ``class_names`` (names the study and
            the label), or no study has a class label.
    """
    index = {n: i for i, n in enumerate(class_names)}
    entries = []
    for d in datalist:
        if not d or not is_class_label(d["label"]):
            continue
        name = read_class_label(d["label"])
        if name not in index:
            raise ValueError(
                f"study {study_id(d['label'])!r} is labelled {name!r}, which is not one of the model's classes "
                f"{class_names}: save a class label of these (PUT /datastore/label) and train again"
            )
        entries.append({"image": d["image"], "label": index[name]})
    if not entries:
        raise ValueError(
            'no study has a class label: save one per study as a JSON label {"label": "<class name>"} '
            f"(PUT /datastore/label?image=STUDY, one of {class_names})"
        )
    counts = Counter(e["label"] for e in entries)
    per_class = {n: counts[i] for i, n in enumerate(class_names)}
    logger.info(f"Class labels: {len(entries)} studies, {per_class}")
    return entries


class OpenUSClassificationTrainTask(OpenUSBundleTrainTask):
    """``POST /train/<classification bundle>``: the bundle's training on the datastore's class labels."""

    def _fetch_datalist(self, request, datastore):
        self._class_names = bundle_class_names(self.bundle_path)
        return class_datalist(datastore.datalist(), self._class_names)

    def _update_overrides(self, overrides):
        """The datalists as the bundle's ids (its loss weights, sampler and drop_last read them) and its classes."""
        overrides = super()._update_overrides(overrides)
        overrides["class_names"] = self._class_names
        overrides["train_datalist"] = overrides[self.const.key_train_dataset_data()]
        overrides["val_datalist"] = overrides.get(self.const.key_validate_dataset_data(), [])
        return overrides
