"""Linear probe and k-NN on frozen encoder features: a pretrained encoder file against the same architecture from
random initialisation, on a labelled classification data set, at several label ratios (issue 13's linear-probe goal).

The foundation study's frozen arm trains a linear head with the bundle's short schedule (12 epochs, AdamW), which
can leave it underfitted; this probe fits the head to convergence on cached features instead, as DINO's linear
and k-NN evaluations do: scikit-learn's L2 logistic regression on standardised features, its strength chosen by
stratified cross-validation on the training subset (``LogisticRegressionCV``), and DINO's weighted k-NN.
Features are the last stage averaged over space (what the pretraining monitor uses); images go through the
pretraining monitor's preprocessing (grey, scaled to [0, 1], resized to the encoder's training size). Label subsets
are the bundles' (`subset_by_label_ratio`: seeded, stratified, nested); every seed draws its own subset and its own
random encoder, and the differences are paired by seed.

    python -m benchmarks.probe_frozen_features weights/openus_us_small.pt --dataset_dir runs/corpus/sources/busi \
        --ratios 0.1 0.25 1.0 --seeds 0 1 2

``--dataset_dir`` is a prepared data set (``prepare`` / ``corpus`` output) whose ``datalist.json`` has ``training``
and ``test`` lists with a class ``label``; the probe trains on (a ratio of) ``training`` and reports ``test`` accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from monai.bundle import ConfigParser

from openus_monai.data.splits import subset_by_label_ratio
from openus_monai.io import load_weights_only
from openus_monai.metrics.representation import knn_accuracy
from openus_monai.networks.pretrained import build_pretrained_encoder, read_encoder_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "openus_pretrain" / "configs"


def preprocessing(image_size: int, in_channels: int):
    """The pretraining monitor's image preprocessing (``monitor#preprocessing`` of the pretraining bundle)."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"bundle_root": str(CONFIGS.parent), "global_size": image_size, "in_channels": in_channels})
    return parser.get_parsed_content("monitor#preprocessing")


@torch.no_grad()
def pooled_features(encoder: torch.nn.Module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """``images [N, C, H, W]`` -> ``[N, D]``: the encoder's last stage averaged over space (eval mode)."""
    encoder.eval()
    return torch.cat([encoder(images[i : i + batch_size])[-1].float().mean((2, 3)) for i in range(0, len(images), batch_size)])


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, seed: int) -> float:
    """Test accuracy of an L2 logistic regression on standardised features, ``C`` chosen by stratified k-fold
    cross-validation on the training features (k = 5, fewer when a class has fewer examples)."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = max(2, min(5, int(torch.bincount(train_y).min())))
    strengths = torch.logspace(-4, 2, 13).tolist()
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=strengths, cv=folds, scoring="accuracy", max_iter=5000,
                                                                 random_state=seed))
    with warnings.catch_warnings():  # scikit-learn 1.9 announces renamed defaults; the ones used here are set explicitly
        warnings.simplefilter("ignore", FutureWarning)
        model.fit(train_x.numpy(), train_y.numpy())
    return float((model.predict(test_x.numpy()) == test_y.numpy()).mean())


def probe_rows(
    weights: Mapping[str, Any], entries: dict[str, list[dict]], images: dict[str, torch.Tensor], ratios: list[float],
    seeds: list[int], k: int = 20,
) -> list[dict[str, float]]:
    """One row per (label ratio, seed): linear-probe and k-NN test accuracy of the pretrained and the random encoder.

    Args:
        weights: the encoder file's content (loaded once with ``weights_only=True``).
        entries: ``{"training": [...], "test": [...]}`` with class names in ``label``.
        images: ``{"training": [N, C, H, W], "test": [M, C, H, W]}``, preprocessed, in the entries' order.
        ratios, seeds: label ratios of ``training`` and seeds (subset and random initialisation).
        k: k-NN neighbours (fewer when the subset is smaller).
    """
    classes = sorted({e["label"] for e in entries["training"]})
    labels = {split: torch.tensor([classes.index(e["label"]) for e in entries[split]]) for split in ("training", "test")}
    pretrained = {s: pooled_features(build_pretrained_encoder(weights), images[s]) for s in ("training", "test")}
    rows = []
    for seed in seeds:
        torch.manual_seed(seed)
        random_encoder = build_pretrained_encoder(weights, init="random")
        random = {s: pooled_features(random_encoder, images[s]) for s in ("training", "test")}
        for ratio in ratios:
            kept = {id(e) for e in subset_by_label_ratio(entries["training"], ratio, seed, stratify_key="label")}
            index = torch.tensor([i for i, e in enumerate(entries["training"]) if id(e) in kept])
            row = {"label_ratio": ratio, "seed": seed, "n_train": len(index)}
            for name, feats in (("pretrained", pretrained), ("random", random)):
                x, y = feats["training"][index], labels["training"][index]
                row[f"{name}_linear"] = linear_probe(x, y, feats["test"], labels["test"], seed)
                row[f"{name}_knn"] = knn_accuracy(x, y, feats["test"], labels["test"], k=min(k, len(index)), num_classes=len(classes))
            rows.append(row)
    return rows


def _mean_std(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.3f}" if len(values) < 2 else f"{mean:.3f} ± {statistics.stdev(values):.3f}"


def markdown(rows: list[dict[str, float]], majority: float) -> str:
    """Mean ± std over seeds per label ratio, with the paired differences pretrained - random."""
    lines = ["| label ratio | training images | linear probe: pretrained | random | pretrained - random | "
             "k-NN: pretrained | random | pretrained - random |", "|---|---|---|---|---|---|---|---|"]
    for ratio in sorted({r["label_ratio"] for r in rows}):
        group = [r for r in rows if r["label_ratio"] == ratio]
        cells = [f"{ratio:g}", f"{statistics.fmean(r['n_train'] for r in group):.0f}"]
        for probe in ("linear", "knn"):
            diff = [r[f"pretrained_{probe}"] - r[f"random_{probe}"] for r in group]
            cells += [_mean_std([r[f"pretrained_{probe}"] for r in group]), _mean_std([r[f"random_{probe}"] for r in group]),
                      ("+" if statistics.fmean(diff) >= 0 else "") + _mean_std(diff)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nAlways answering the most frequent training class scores {majority:.3f} on the test list."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", help="an encoder file (e.g. weights/openus_us_small.pt)")
    parser.add_argument("--dataset_dir", required=True, help="a prepared data set with datalist.json (training, test)")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.25, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--image_size", type=int, default=None, help="default: the size the encoder file was trained at")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()

    start = time.perf_counter()
    content = load_weights_only(args.weights)
    record, _ = read_encoder_checkpoint(content)
    meta = content.get("meta", {})
    size = args.image_size or int(meta.get("image_size", 224))
    in_channels = int(record["args"].get("in_channels", 1))
    datalist = json.loads((Path(args.dataset_dir) / "datalist.json").read_text(encoding="utf-8"))
    entries = {s: [e for e in datalist[s] if e.get("label") is not None] for s in ("training", "test")}
    transform = preprocessing(size, in_channels)
    images = {s: torch.stack([transform({"image": e["image"]})["image"] for e in entries[s]]) for s in entries}
    rows = probe_rows(content, entries, images, args.ratios, args.seeds)
    counts = {c: sum(e["label"] == c for e in entries["training"]) for c in {e["label"] for e in entries["training"]}}
    majority = sum(e["label"] == max(counts, key=counts.get) for e in entries["test"]) / len(entries["test"])
    print(f"{args.weights} on {args.dataset_dir}: {len(entries['training'])} training / {len(entries['test'])} test images "
          f"at {size} px, seeds {args.seeds}, {time.perf_counter() - start:.0f} s\n")
    print(markdown(rows, majority))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "majority": majority}, indent=1), encoding="utf-8")
    if any(not math.isfinite(v) for r in rows for v in r.values()):
        raise SystemExit("non-finite accuracy")


if __name__ == "__main__":
    main()
