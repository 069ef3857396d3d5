"""``openus_monai.data.inference_datalist``: the one image list of both downstream bundles' inference."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from openus_monai.data import inference_datalist


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    return str(path)


def test_class_folders_are_a_data_set_for_classification_only(tmp_path):
    root = tmp_path / "data"
    train = _png(root / "train" / "benign" / "t.png")
    test = [_png(root / "test" / "benign" / "x.png"), _png(root / "test" / "malignant" / "y.png")]
    got = inference_datalist(root, task="classification")
    assert [e["image"] for e in got] == test
    assert [e["image"] for e in inference_datalist(root, "all", task="classification")] == sorted([train, *test])
    with pytest.raises(ValueError, match="'validation': no entries"):
        inference_datalist(root, "validation", task="classification")
    # segmentation reads the same folder as a plain folder of images: all of them, whatever the split
    assert [e["image"] for e in inference_datalist(root)] == sorted([train, *test])


def test_labels_csv_without_labels_and_missing_files(tmp_path):
    root = tmp_path / "data"
    a, b = _png(root / "a.png"), _png(root / "b.png")
    (root / "labels.csv").write_text("image,split\na.png,test\nb.png,train\ngone.png,test\n")
    # classification no longer needs the label column to list images; a listed missing file is refused...
    with pytest.raises(FileNotFoundError, match="gone.png"):
        inference_datalist(root, task="classification")
    # ...or, with check_exists=False, left to validate_datalist (which reports or skips it)
    got = inference_datalist(root, check_exists=False, task="classification")
    assert [e["image"] for e in got] == [a, str(root / "gone.png")]
    assert inference_datalist(root, check_exists=False) == got  # both tasks read a labels.csv alike
    assert [e["image"] for e in inference_datalist(root, "training", check_exists=False)] == [b]
    with pytest.raises(ValueError, match="task must be"):
        inference_datalist(root, task="detection")
