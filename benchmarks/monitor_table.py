"""The pretraining monitor of one run as a Markdown table, read back from the bundle's log.

Every epoch the pretraining bundle logs ``Epoch[N] Metrics -- key: value ...`` (the losses' epoch means and the
:class:`~openus_monai.handlers.RepresentationMonitor` diagnostics) and, on k-NN epochs, ``epoch N: knn_acc X``.
This prints one row per ``--every`` epochs (and the last):

    python -m benchmarks.monitor_table runs/pretrain_small/train.log [--every 2]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

METRICS = re.compile(r"Epoch\[(\d+)\] Metrics -- (.*)")
KNN = re.compile(r"epoch (\d+): knn_acc ([0-9.]+)")
#: column title -> (logged key, format)
COLUMNS = {
    "iBOT class loss": ("epoch_loss_cls", "{:.2f}"),
    "iBOT patch loss": ("epoch_loss_patch", "{:.2f}"),
    "reconstruction (global)": ("epoch_loss_rec_global", "{:.4f}"),
    "teacher entropy / ln K": ("monitor_entropy_ratio", "{:.2f}"),
    "largest prototype share": ("monitor_max_prototype_share", "{:.2f}"),
    "patch target entropy / ln K": ("monitor_patch_entropy_ratio", "{:.2f}"),
    "feature std x sqrt(D)": ("monitor_feature_std_ratio", "{:.2f}"),
}


def read_monitor(log: Path) -> tuple[dict[int, dict[str, float]], dict[int, float]]:
    """``({epoch: {key: value}}, {epoch: k-NN accuracy})`` from a pretraining log (the last record of an epoch wins,
    so a resumed run's log reads as the run)."""
    epochs: dict[int, dict[str, float]] = {}
    knn: dict[int, float] = {}
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if m := METRICS.search(line):
            pairs = re.findall(r"(\w+): (-?[0-9.]+(?:e-?\d+)?)", m.group(2))
            epochs[int(m.group(1))] = {k: float(v) for k, v in pairs}
        elif m := KNN.search(line):
            knn[int(m.group(1))] = float(m.group(2))
    return epochs, knn


def monitor_table(log: Path, every: int = 1) -> str:
    """The Markdown table of :func:`read_monitor`: epochs ``1, every, 2 * every, ...`` and the last."""
    epochs, knn = read_monitor(log)
    if not epochs:
        raise ValueError(f"{log}: no 'Epoch[N] Metrics' lines (is it a pretraining bundle's log?)")
    last = max(epochs)
    shown = [e for e in sorted(epochs) if e == 1 or e % every == 0 or e == last]
    header = ["epoch", *COLUMNS, "k-NN"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for e in shown:
        row = epochs[e]
        cells = [fmt.format(row[key]) if key in row else "-" for key, fmt in COLUMNS.values()]
        cells.append(f"{knn[e]:.3f}" if e in knn else "-")
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--every", type=int, default=1, help="one row per this many epochs (and the first and last)")
    args = parser.parse_args()
    print(monitor_table(args.log, args.every))


if __name__ == "__main__":
    main()
