"""k-NN / linear-probe accuracy and collapse diagnostics on synthetic features and distributions."""

from __future__ import annotations

import math

import pytest
import torch

from openus_monai.metrics import collapse_diagnostics, knn_accuracy, linear_probe_accuracy


def _blobs(n_per_class: int, classes: int = 4, dim: int = 16, spread: float = 0.3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 3
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=g), labels


def test_knn_separable_near_one_and_shuffled_near_chance():
    xtr, ytr = _blobs(100, seed=0)
    xte, yte = _blobs(100, seed=0)  # same centres (same seed), fresh noise below
    xte = xte + 0.3 * torch.randn(xte.shape, generator=torch.Generator().manual_seed(1))
    assert knn_accuracy(xtr, ytr, xte, yte, k=20) > 0.97
    g = torch.Generator().manual_seed(2)
    shuffle_tr, shuffle_te = ytr[torch.randperm(len(ytr), generator=g)], yte[torch.randperm(len(yte), generator=g)]
    acc = knn_accuracy(xtr, shuffle_tr, xte, shuffle_te, k=20)
    assert abs(acc - 0.25) < 0.08, acc  # labels independent of the features: 4 classes, chance 0.25


def test_knn_chunking_and_k_clipping_give_the_same_answer():
    xtr, ytr = _blobs(30, seed=3)
    xte, yte = _blobs(30, seed=4)
    assert knn_accuracy(xtr, ytr, xte, yte, k=500, chunk=7) == knn_accuracy(xtr, ytr, xte, yte, k=500, chunk=1024)
    with pytest.raises(ValueError):
        knn_accuracy(xtr, ytr, xte[:, :3], yte)


def test_linear_probe_separable_and_shuffled():
    xtr, ytr = _blobs(60, seed=0)
    xte, yte = _blobs(60, seed=0)
    assert linear_probe_accuracy(xtr, ytr, xte, yte, steps=200) > 0.97
    shuffled = ytr[torch.randperm(len(ytr), generator=torch.Generator().manual_seed(5))]
    xte2, yte2 = _blobs(60, seed=0)
    assert linear_probe_accuracy(xtr, shuffled, xte2 + 0.5 * torch.randn_like(xte2), yte2, steps=200) < 0.5


def test_diagnostics_uniform_one_hot_and_healthy():
    k, b = 64, 32
    uniform = collapse_diagnostics(torch.full((b, k), 1.0 / k))
    assert uniform["entropy_ratio"] == pytest.approx(1.0, abs=1e-5)
    assert uniform["kl_uniform"] == pytest.approx(0.0, abs=1e-4)

    one_hot = torch.zeros(b, k)
    one_hot[:, 7] = 1
    collapsed = collapse_diagnostics(one_hot, features=torch.ones(b, 10) + 1e-4 * torch.randn(b, 10))
    assert collapsed["entropy"] == pytest.approx(0.0, abs=1e-5)
    assert collapsed["kl_uniform"] == pytest.approx(math.log(k), abs=1e-4)
    assert collapsed["max_prototype_share"] == 1.0 and collapsed["prototypes_used"] == 1.0
    assert collapsed["feature_std_ratio"] < 0.01

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(b, k, generator=g) * 5  # sharp rows, different argmax per row
    healthy = collapse_diagnostics(logits.softmax(-1), features=torch.randn(b, 10, generator=g))
    assert healthy["entropy_ratio"] < 0.5
    assert healthy["max_prototype_share"] < 0.25 and healthy["prototypes_used"] > 10
    assert healthy["batch_entropy_ratio"] > 0.7
    assert 0.7 < healthy["feature_std_ratio"] < 1.3
    with pytest.raises(ValueError):
        collapse_diagnostics(torch.ones(k))
