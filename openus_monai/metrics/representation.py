"""Representation-quality and collapse measures for self-supervised pretraining, as pure functions.

- :func:`knn_accuracy`: DINO's weighted k-NN classifier (cosine similarity, top-k neighbours, votes
  weighted by ``exp(similarity / T)``) from train features to validation features.
- :func:`linear_probe_accuracy`: a logistic-regression probe trained in torch on frozen features.
- :func:`collapse_diagnostics`: entropy of the teacher's output distributions, their KL divergence to
  uniform, the largest prototype's share of argmax assignments, and the per-dimension feature std.

Written by hand: MONAI and Ignite have classification metrics but no k-NN evaluation of embeddings
and no distribution-collapse measures.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["collapse_diagnostics", "knn_accuracy", "linear_probe_accuracy"]


@torch.no_grad()
def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
    leave_one_out: bool = False,
) -> float:
    """Accuracy of DINO's weighted k-NN classifier.

    Features are L2-normalised; each validation sample's ``k`` most cosine-similar training samples
    vote for their class with weight ``exp(similarity / temperature)``; the class with the largest
    summed weight is the prediction.

    Args:
        train_features: ``[N, D]``.
        train_labels: ``[N]`` integer classes.
        val_features: ``[M, D]``.
        val_labels: ``[M]`` integer classes.
        k: neighbours (clipped to ``N``).
        temperature: vote temperature (DINO: 0.07).
        num_classes: classes (default: ``1 + max`` label).
        chunk: validation rows per similarity block (bounds memory at ``chunk * N``).
        leave_one_out: the validation set *is* the training set (same rows, same order); each row's
            own entry is left out of its neighbours.

    Returns:
        accuracy in ``[0, 1]``.
    """
    if train_features.ndim != 2 or val_features.ndim != 2 or train_features.shape[1] != val_features.shape[1]:
        raise ValueError(f"features must be [N, D] and [M, D], got {tuple(train_features.shape)} and {tuple(val_features.shape)}")
    if len(train_features) != len(train_labels) or len(val_features) != len(val_labels):
        raise ValueError("one label per feature row is needed")
    train = F.normalize(train_features.float(), dim=1)
    val = F.normalize(val_features.float(), dim=1)
    train_labels, val_labels = train_labels.long().to(train.device), val_labels.long().to(train.device)
    classes = num_classes or int(max(train_labels.max(), val_labels.max())) + 1
    if leave_one_out and len(train) != len(val):
        raise ValueError("leave_one_out needs the same rows as training and validation set")
    k = min(k, len(train) - int(leave_one_out))
    correct = 0
    for start in range(0, len(val), chunk):
        sim = val[start : start + chunk] @ train.T  # [m, N]
        if leave_one_out:
            rows = torch.arange(len(sim), device=sim.device)
            sim[rows, rows + start] = -math.inf
        sim, idx = sim.topk(k, dim=1)  # [m, k]
        votes = torch.zeros(len(sim), classes, device=train.device)
        votes.scatter_add_(1, train_labels[idx], (sim / temperature).exp())
        correct += int((votes.argmax(1) == val_labels[start : start + chunk]).sum())
    return correct / max(len(val), 1)


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    steps: int = 300,
    lr: float = 0.1,
    weight_decay: float = 1e-4,
    num_classes: int | None = None,
    seed: int = 0,
) -> float:
    """Accuracy of a logistic-regression probe on frozen features (full-batch AdamW, standardised inputs).

    Args:
        train_features, train_labels: ``[N, D]`` and ``[N]``.
        val_features, val_labels: ``[M, D]`` and ``[M]``.
        steps: optimisation steps over the whole training set.
        lr, weight_decay: AdamW settings.
        num_classes: classes (default: ``1 + max`` label).
        seed: initialisation seed (the global RNG is left untouched).

    Returns:
        validation accuracy in ``[0, 1]``.
    """
    x, xv = train_features.float().detach(), val_features.float().detach()
    y, yv = train_labels.long(), val_labels.long()
    classes = num_classes or int(max(y.max(), yv.max())) + 1
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)  # statistics of the training features only
    x, xv = (x - mean) / std, (xv - mean) / std
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(x.shape[1], classes, generator=generator) * 0.01).requires_grad_(True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            F.cross_entropy(x @ weight + bias, y).backward()
            optimizer.step()
    with torch.no_grad():
        return float(((xv @ weight + bias).argmax(1) == yv).float().mean())


@torch.no_grad()
def collapse_diagnostics(probs: torch.Tensor, features: torch.Tensor | None = None) -> dict[str, float]:
    """Collapse measures of a batch of teacher output distributions (and optionally its features).

    Uniform collapse: every row near uniform (``entropy`` near ``ln K``, ``kl_uniform`` near 0).
    One-hot / dominant-prototype collapse: ``max_prototype_share`` near 1 (all rows pick the same
    prototype), with ``entropy`` near 0. A healthy teacher has low per-row entropy, rows spread over
    many prototypes (``prototypes_used`` large) and non-vanishing ``feature_std``.

    Args:
        probs: teacher probabilities ``[B, K]`` (rows sum to 1), after centring and sharpening.
        features: optional features ``[B, D]`` (e.g. the pooled encoder output); L2-normalised here.

    Returns:
        ``entropy`` (mean row entropy, nats), ``entropy_ratio`` (``entropy / ln K``), ``kl_uniform``
        (mean KL(row || uniform) = ``ln K - entropy``), ``batch_entropy_ratio`` (entropy of the batch-mean
        distribution / ``ln K``), ``max_prototype_share`` (largest fraction of rows whose argmax is one
        prototype), ``prototypes_used`` (distinct argmax prototypes), and with ``features``:
        ``feature_std`` (mean over dimensions of the per-dimension std of the normalised features;
        about ``1 / sqrt(D)`` when spread, 0 when collapsed) and ``feature_std_ratio`` (that times ``sqrt(D)``).
    """
    if probs.ndim != 2:
        raise ValueError(f"probs must be [B, K], got {tuple(probs.shape)}")
    p = probs.float().clamp_min(0)
    p = p / p.sum(1, keepdim=True).clamp_min(1e-12)
    log_k = math.log(p.shape[1])
    entropy = float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())
    mean_p = p.mean(0)
    batch_entropy = float(-(mean_p * mean_p.clamp_min(1e-12).log()).sum())
    counts = torch.bincount(p.argmax(1), minlength=p.shape[1])
    out = {
        "entropy": entropy,
        "entropy_ratio": entropy / log_k if log_k > 0 else 0.0,
        "kl_uniform": log_k - entropy,
        "batch_entropy_ratio": batch_entropy / log_k if log_k > 0 else 0.0,
        "max_prototype_share": float(counts.max()) / len(p),
        "prototypes_used": float((counts > 0).sum()),
    }
    if features is not None:
        z = F.normalize(features.float().flatten(1), dim=1)
        std = float(z.std(0).mean()) if len(z) > 1 else 0.0
        out["feature_std"] = std
        out["feature_std_ratio"] = std * math.sqrt(z.shape[1])
    return out
