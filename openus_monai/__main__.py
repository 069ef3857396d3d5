"""Command line: ``python -m openus_monai <command> [args]`` (or the ``openus-monai`` script).

Each command is a method of :class:`OpenUSCLI` that calls one library function; imports are lazy so
that every command starts fast. Run ``python -m openus_monai --help`` for the list.
"""

from __future__ import annotations

import json

import fire


class OpenUSCLI:
    """OpenUS-MONAI commands."""

    def synthesize(
        self, out_dir: str, n: int = 48, seed: int = 0, size: int | tuple[int, int] = 256, overwrite: bool = False
    ) -> dict:
        """Write the synthetic demo data set (images, masks, labels.csv, datalists) to OUT_DIR.

        Args:
            out_dir: output folder.
            n: number of images.
            seed: random seed (same seed, same bytes).
            size: image size, int or "(H, W)".
            overwrite: regenerate even when OUT_DIR already holds this exact data set.

        Returns:
            summary: counts per class and split, and the output folder.
        """
        from openus_monai.data import synthesize_dataset

        return synthesize_dataset(out_dir, n=n, seed=seed, size=size, overwrite=overwrite)

    def datalist(
        self,
        dataset_dir: str,
        task: str,
        output: str | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        label_ratio: float = 1.0,
    ) -> str:
        """Build the datalist of DATASET_DIR for TASK (pretraining, segmentation, classification) as JSON.

        Args:
            dataset_dir: data set folder (datalist.json, labels.csv, or folders of images).
            task: pretraining, segmentation or classification.
            output: JSON file to write; printed when omitted.
            val_fraction: validation hold-out when the data set has no validation split.
            seed: seed of the hold-out and label subset.
            label_ratio: fraction of training labels to keep, in (0, 1].

        Returns:
            the JSON text, or the path written.
        """
        from openus_monai.data import build_datalist

        result = build_datalist(dataset_dir, task, val_fraction=val_fraction, seed=seed, label_ratio=label_ratio)
        text = json.dumps(result, indent=4)
        if output is None:
            return text
        with open(output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        return output

    def export_backbone(self, checkpoint: str, out: str, key: str | None = None) -> str:
        """Write the teacher encoder of a pretraining CHECKPOINT to OUT as a plain state dict.

        Accepts this project's checkpoints (``network`` entry) and original OpenUS ones (``teacher``); the
        result loads with ``openus_monai.networks.load_openus_checkpoint`` and the bundles' ``pretrained``.

        Args:
            checkpoint: the pretraining checkpoint (loaded with ``weights_only=True``).
            out: the file to write (atomically).
            key: entry to read, e.g. ``student`` (default: the teacher).

        Returns:
            the path written.
        """
        from openus_monai.networks.export import export_backbone

        return str(export_backbone(checkpoint, out, key))


def main() -> None:
    """Entry point of ``python -m openus_monai`` and the ``openus-monai`` script."""
    fire.Fire(OpenUSCLI, name="openus_monai")


if __name__ == "__main__":
    main()
