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

    def label_efficiency(
        self,
        bundle: str = "openus_seg",
        output_dir: str = "runs/label_efficiency",
        ratios: float | tuple = (0.2, 0.4, 0.6, 0.8, 1.0),
        seeds: int | tuple = (0, 1, 2),
        pretrained: str | tuple | dict = "",  # kept short: fire's help cuts long type names
        config_file: str | tuple | None = None,
        overrides: dict | None = None,
        metrics: str | tuple | None = None,
        resume: bool = False,
        in_process: bool = False,
    ) -> dict:
        """Label-efficiency study: train and evaluate BUNDLE for every label ratio, seed and encoder init.

        Writes OUTPUT_DIR/label_efficiency.csv (one row per run), label_efficiency_summary.csv (mean and
        std over seeds) and label_efficiency.png (metrics vs label ratio), as in OpenUS Fig. 5.

        Args:
            bundle: bundle folder or name (openus_seg, openus_cls).
            output_dir: study folder.
            ratios: label ratios, e.g. "[0.2,0.6,1.0]".
            seeds: seeds, e.g. "[0,1,2]".
            pretrained: encoder inits: a checkpoint, a list, or "{'openus': 'enc.pt', 'random': ''}"; "" (default) = random.
            config_file: extra config(s) merged after train.json, e.g. configs/tiny.json.
            overrides: bundle overrides for every run, e.g. "{'max_epochs': 50, 'dataset_dir': '/data/busi'}".
            metrics: metric keys to plot (default: all numbers in metrics.json but n_*).
            resume: reuse runs that already have eval/metrics.json.
            in_process: run the bundle in this process instead of one subprocess per run.

        Returns:
            the paths written and the summary rows.
        """
        import logging

        from openus_monai.studies.label_efficiency import run_label_efficiency

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

        def as_list(v):
            return None if v is None else list(v) if isinstance(v, (list, tuple)) else [v]

        result = run_label_efficiency(
            bundle, output_dir, ratios=as_list(ratios), seeds=as_list(seeds),
            pretrained=pretrained if isinstance(pretrained, dict) else as_list(pretrained),
            config_files=as_list(config_file) or (), overrides=overrides,
            metrics=as_list(metrics), resume=resume, in_process=in_process,
        )
        return {k: result[k] for k in ("csv", "summary_csv", "plot", "summary")}


def command_overview(cli: type = OpenUSCLI) -> str:
    """The top-level help: every command (spelled with hyphens, as the README does) with its first doc line."""
    names = [n for n, v in vars(cli).items() if callable(v) and not n.startswith("_")]
    width = max(len(n) for n in names) + 2
    lines = [
        "OpenUS-MONAI commands.",
        "",
        "Usage: python -m openus_monai COMMAND [--ARG VALUE ...]   (COMMAND --help: its arguments)",
        "",
        "Commands:",
    ]
    for name in names:
        summary = (getattr(cli, name).__doc__ or "").strip().splitlines()[0] if getattr(cli, name).__doc__ else ""
        lines.append(f"  {name.replace('_', '-'):<{width}}{summary}")
    return "\n".join(lines)


OpenUSCLI.__doc__ = command_overview()  # fire shows the class docstring as the top-level --help


def main() -> None:
    """Entry point of ``python -m openus_monai`` and the ``openus-monai`` script."""
    fire.Fire(OpenUSCLI, name="openus_monai")


if __name__ == "__main__":
    main()
