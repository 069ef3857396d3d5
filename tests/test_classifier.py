"""OpenUSClassifier and the classification helpers (in process, tiny encoder, CPU)."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from openus_monai.data import (
    ClassNames,
    balanced_sampler,
    class_weights,
    encode_labels,
    inference_datalist,
    labeled_split,
    read_class_names,
)
from openus_monai.handlers import ClassificationReport
from openus_monai.metrics import MulticlassMetric, confusion_matrix
from openus_monai.networks import OpenUSClassifier, build_encoder, resolve_freeze_encoder

TINY = {"depths": [1, 1, 1, 1], "dims": 8}
BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "openus_cls"



@pytest.fixture(scope="module")
def demo_cls_dir(tmp_path_factory):
    """The demo data set (48 phantoms, 3 classes), small images for speed."""
    from openus_monai.data import synthesize_dataset

    out = tmp_path_factory.mktemp("demo_cls")
    synthesize_dataset(out, n=48, seed=0, size=128)
    return out


def test_forward_shapes_and_modes():
    torch.manual_seed(0)
    net = OpenUSClassifier(TINY, num_classes=3)
    assert net.freeze_encoder is False and net.mode == "finetune" and net.num_features == 64
    x = torch.randn(2, 1, 64, 64)
    assert net(x).shape == (2, 3)
    assert net.forward_features(x).shape == (2, 64)
    # MONAI loaders hand over MetaTensors with batched metadata; same logits as a plain tensor
    net.eval()
    assert torch.allclose(net(MetaTensor(x, meta={"filename_or_obj": ["a", "b"]})), net(x))
    net.set_freeze_encoder(True).train()
    assert not net.encoder.training and net.head.training and net.mode == "linear_probe"
    assert all(not p.requires_grad for p in net.encoder.parameters())
    net.set_freeze_encoder(False)
    assert net.encoder.training and all(p.requires_grad for p in net.encoder.parameters())
    with pytest.raises(ValueError, match="mode must be one of"):
        OpenUSClassifier(TINY, num_classes=3, mode="frozen")
    with pytest.raises(ValueError, match="head_norm"):
        OpenUSClassifier(TINY, num_classes=3, head_norm="group")
    assert isinstance(OpenUSClassifier(TINY, 2, head_norm=None).norm, torch.nn.Identity)
    assert isinstance(OpenUSClassifier(TINY, 2, head_norm="batch").norm, torch.nn.BatchNorm1d)


def test_deprecated_mode_spelling_of_freeze_encoder():
    """``mode="linear_probe"/"finetune"`` still works, with a DeprecationWarning, as ``freeze_encoder``."""
    with pytest.warns(DeprecationWarning, match="use freeze_encoder=True"):
        net = OpenUSClassifier(TINY, num_classes=3, mode="linear_probe")
    assert net.freeze_encoder and all(not p.requires_grad for p in net.encoder.parameters())
    with pytest.warns(DeprecationWarning, match="use freeze_encoder=False"):
        net.set_mode("finetune")
    assert not net.freeze_encoder and all(p.requires_grad for p in net.encoder.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling warns nothing
        assert resolve_freeze_encoder(True) is True and resolve_freeze_encoder(False) is False
    with pytest.raises(ValueError, match="contradicts"), pytest.warns(DeprecationWarning):
        resolve_freeze_encoder(True, "finetune")
    # the command line hands over strings: "--freeze_encoder false" must not freeze (a non-empty string is truthy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_freeze_encoder("true") is True and resolve_freeze_encoder("False") is False
        assert OpenUSClassifier(TINY, num_classes=3, freeze_encoder="false").freeze_encoder is False
    with pytest.raises(ValueError, match="freeze_encoder must be true or false"):
        resolve_freeze_encoder("maybe")


def test_bundle_deprecated_mode_override():
    """``--mode linear_probe`` on the bundle freezes the encoder (and picks the linear-probe defaults), warning."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    assert parser.get_parsed_content("encoder_frozen") is False and parser.get_parsed_content("learning_rate") == 5e-4
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update({"mode": "linear_probe"})
    with pytest.warns(DeprecationWarning, match="mode='linear_probe' is deprecated"):
        assert parser.get_parsed_content("encoder_frozen") is True
    assert parser.get_parsed_content("learning_rate") == 1e-3 and parser.get_parsed_content("drop_path_rate") == 0.0
    assert parser["network_def"]["freeze_encoder"] == "@encoder_frozen"
    for given, frozen in (("true", True), ("false", False)):  # as `--freeze_encoder true|false` passes them
        parser = ConfigParser()
        parser.read_config(str(BUNDLE / "configs" / "train.json"))
        parser.update({"freeze_encoder": given})
        assert parser.get_parsed_content("encoder_frozen") is frozen


def test_linear_probe_keeps_encoder_and_trains_head():
    torch.manual_seed(0)
    net = OpenUSClassifier(TINY, num_classes=3, freeze_encoder=True, drop_path_rate=0.2)
    encoder_before = copy.deepcopy(net.encoder.state_dict())
    head_before = net.head.weight.detach().clone()
    groups = net.param_groups(lr=1e-2, weight_decay=0.05)
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in [*net.norm.parameters(), *net.head.parameters()]}
    opt = torch.optim.AdamW(groups)
    net.train()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(net(torch.randn(4, 1, 64, 64)), torch.tensor([0, 1, 2, 0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in net.encoder.state_dict().items():
        assert torch.equal(v, encoder_before[k]), k
    assert not torch.equal(net.head.weight, head_before)


def test_finetune_param_groups_layer_decay():
    net = OpenUSClassifier(TINY, num_classes=2)
    groups = net.param_groups(lr=1.0, weight_decay=0.05, layer_decay=0.5, encoder_lr_scale=0.1)
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(net.head.weight)]["lr"] == 1.0
    assert by_param[id(net.head.bias)]["weight_decay"] == 0.0
    # stem: depth 0 of 4 blocks + 1 -> 0.1 * 0.5 ** 5
    assert by_param[id(net.encoder.patch_embed[0].weight)]["lr"] == pytest.approx(0.1 * 0.5**5)
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


def test_pretrained_from_encoder_and_from_classifier_checkpoint(tmp_path):
    torch.manual_seed(1)
    enc = build_encoder(TINY, in_channels=3)  # a 3-channel stem loads into the 1-channel classifier
    torch.save({"teacher": {f"backbone.{k}": v for k, v in enc.state_dict().items()}}, tmp_path / "openus.pt")
    net = OpenUSClassifier(TINY, num_classes=3, pretrained=str(tmp_path / "openus.pt"))
    assert torch.allclose(net.encoder.patch_embed[0].weight, enc.patch_embed[0].weight.sum(1, keepdim=True))
    assert torch.equal(net.encoder.layers[2].blocks[0].op.A_logs, enc.layers[2].blocks[0].op.A_logs)
    # a checkpoint of this bundle ({"model": classifier state, "class_names": [...]}) initialises a new encoder
    torch.save({"model": net.state_dict(), "class_names": ["a", "b", "c"]}, tmp_path / "model.pt")
    again = OpenUSClassifier(TINY, num_classes=5, pretrained=str(tmp_path / "model.pt"))
    for k, v in net.encoder.state_dict().items():
        assert torch.equal(v, again.encoder.state_dict()[k]), k
    # an existing module plus a checkpoint
    module = build_encoder(TINY, in_channels=1)
    OpenUSClassifier(module, num_classes=2, pretrained=str(tmp_path / "model.pt"))
    assert torch.equal(module.patch_embed[0].weight, net.encoder.patch_embed[0].weight)


def test_multiclass_metric_equals_sklearn():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        n = int(torch.randint(2, 6, (1,), generator=g))
        size = int(torch.randint(1, 40, (1,), generator=g))
        y = torch.randint(0, n, (size,), generator=g)
        logits = torch.randn(size, n, generator=g) + torch.nn.functional.one_hot(y, n) * 0.7
        pred = logits.argmax(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn warns about classes absent from y_true
            expected = {
                "accuracy": accuracy_score(y, pred),
                "macro_f1": f1_score(y, pred, average="macro"),
                "balanced_accuracy": balanced_accuracy_score(y, pred),
            }
        for name, value in expected.items():
            metric = MulticlassMetric(name)
            half = size // 2  # two updates, decollated lists: as an evaluator feeds it
            if half:
                metric(list(logits[:half]), list(torch.nn.functional.one_hot(y[:half], n)))
            metric(list(logits[half:]), list(y[half:, None]))
            assert metric.aggregate() == pytest.approx(value, abs=1e-12), (name, y, pred)
    # the report's AUC: MONAI's one-vs-rest macro AUC equals scikit-learn's when every class occurs
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    probs = torch.softmax(torch.randn(7, 3, generator=g), 1)
    report = ClassificationReport(".", ["a", "b", "c"])
    rows = [(f"{i}.png", int(t), p.numpy()) for i, (t, p) in enumerate(zip(y, probs))]
    got = report._metrics(rows)
    assert got["auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert got["n_images"] == 7
    # the report's confusion matrix (Ignite's ConfusionMatrix): rows true, columns predicted, as scikit-learn
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    for _ in range(10):
        n = int(torch.randint(2, 6, (1,), generator=g))
        labels = torch.randint(0, n, (25,), generator=g).tolist()
        preds = torch.randint(0, n, (25,), generator=g).tolist()
        np.testing.assert_array_equal(confusion_matrix(labels, preds, n), sk_confusion_matrix(labels, preds, labels=list(range(n))))
    assert confusion_matrix([], [], 3).tolist() == [[0] * 3] * 3


def test_encode_labels_weights_sampler():
    entries = [{"image": f"{i}.png", "label": c} for i, c in enumerate(["b", "a", "a", "a", "c", "b"])]
    encoded = encode_labels(entries, ["a", "b", "c"])
    assert [e["label"] for e in encoded] == [1, 0, 0, 0, 2, 1] and entries[0]["label"] == "b"
    with pytest.raises(ValueError, match=r"7.png: class 'd' is not one of"):
        encode_labels([{"image": "7.png", "label": "d"}], ["a", "b", "c"])
    with pytest.raises(ValueError, match="8.png: no class label"):
        encode_labels([{"image": "8.png"}], ["a"])
    assert encode_labels([{"image": "8.png"}], ["a"], require_labels=False) == [{"image": "8.png"}]
    assert labeled_split({"test": entries[:2]}, "test", ["a", "b", "c"]) == encoded[:2]
    with pytest.raises(ValueError, match="no test images"):
        labeled_split({"training": entries, "test": []}, "test", ["a", "b", "c"])
    weights = class_weights(encoded, 3)
    assert torch.allclose(weights, torch.tensor([6 / 9, 1.0, 2.0]))
    assert class_weights(encoded, 3, class_balance="none") is None
    sampler = balanced_sampler(encoded, 3, "sampler", seed=0)
    assert torch.allclose(sampler.weights, torch.tensor([0.5, 1 / 3, 1 / 3, 1 / 3, 1.0, 0.5], dtype=torch.double))
    assert balanced_sampler(encoded, 3, "loss") is None
    with pytest.raises(ValueError, match="class_balance must be one of"):
        class_weights(encoded, 3, class_balance="oversample")


def test_class_names_checkpoint_and_inference_list(tmp_path):
    names = ClassNames(["benign", "malignant"])
    torch.save({"model": {"w": torch.zeros(1)}, "class_names": names.state_dict()}, tmp_path / "model.pt")
    assert read_class_names(tmp_path / "model.pt") == ["benign", "malignant"]
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="no 'class_names'"):
        read_class_names(tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError, match="train first"):
        read_class_names(tmp_path / "missing.pt")
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("b.png", "a.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / name)
    assert [Path(e["image"]).name for e in inference_datalist(folder, task="classification")] == ["a.png", "b.png"]
    with pytest.raises(ValueError, match="split must be one of"):
        inference_datalist(folder, "train", task="classification")


def test_bundle_linear_probe_training_leaves_encoder_unchanged(tmp_path, demo_cls_dir):
    """The bundle's own trainer (train.json + tiny.json, in process), freeze_encoder true, one epoch."""
    from monai.bundle import ConfigWorkflow

    configs = [str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "tiny.json")]
    workflow = ConfigWorkflow(config_file=configs, meta_file=str(BUNDLE / "configs" / "metadata.json"),
                              logging_file=False, workflow_type="train",
                              dataset_dir=str(demo_cls_dir), ckpt_dir=str(tmp_path / "models"),
                              output_dir=str(tmp_path / "eval"), freeze_encoder=True, max_epochs=1)
    workflow.initialize()
    net = workflow.parser.get_parsed_content("network_def")
    encoder_before = copy.deepcopy(net.encoder.state_dict())
    head_before = copy.deepcopy(net.head.state_dict())
    workflow.run()
    workflow.finalize()
    for k, v in net.encoder.state_dict().items():
        assert torch.equal(v, encoder_before[k]), f"encoder weight {k} changed with a frozen encoder"
    assert any(not torch.equal(v, head_before[k]) for k, v in net.head.state_dict().items())
    saved = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert saved["class_names"] == ["benign", "malignant", "normal"]
    for k, v in encoder_before.items():
        assert torch.equal(saved["model"][f"encoder.{k}"], v)
