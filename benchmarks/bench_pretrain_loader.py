"""The pretraining bundle's data pipeline alone: images/s that one loader process prepares (every global and local
view, its box and the local masks), after the cache of the deterministic transforms is built.

Multiply by ``num_workers`` for the loader's ceiling, and compare with what the engine consumes (images per
iteration / seconds per iteration): when the engine consumes far less, the loader does not set the pace.

    python -m benchmarks.bench_pretrain_loader DATASET_DIR [--configs small.json] [--images 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from benchmarks._measure import median_seconds

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "openus_pretrain"


def pretraining_dataset(dataset_dir: str, configs: list[str], work_dir: str):
    """The bundle's ``train#dataset`` (``train.json`` merged with ``configs``) on ``dataset_dir``, cache built."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "train.json")] + [str(BUNDLE / "configs" / c) for c in configs])
    parser.read_meta(str(BUNDLE / "configs" / "metadata.json"))
    parser.update({"bundle_root": str(BUNDLE), "dataset_dir": dataset_dir, "num_workers": 0,
                   "ckpt_dir": f"{work_dir}/models", "output_dir": f"{work_dir}/eval"})
    return parser.get_parsed_content("train#dataset")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset_dir", help="a corpus or data set folder, as the bundle's --dataset_dir")
    parser.add_argument("--configs", nargs="*", default=["small.json"], help="configs merged after train.json")
    parser.add_argument("--images", type=int, default=64, help="images per timed pass")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a loader worker
    with tempfile.TemporaryDirectory() as work_dir:
        dataset = pretraining_dataset(args.dataset_dir, args.configs, work_dir)
        count = min(args.images, len(dataset))
        seconds = median_seconds(lambda: [dataset[i] for i in range(count)], args.repeats)
    print(f"| configs | images | ms per image | images/s, one process |\n|---|---:|---:|---:|\n"
          f"| train.json + {' + '.join(args.configs)} | {count} | {1000 * seconds / count:.1f} | {count / seconds:.0f} |")


if __name__ == "__main__":
    main()
