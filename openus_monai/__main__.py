"""Command line: ``python -m openus_monai <command> [args]`` (or the ``openus-monai`` script).

Each command is a method of :class:`OpenUSCLI` that calls one library function; imports are lazy so
that every command starts fast. Run ``python -m openus_monai --help`` for the list.
"""

from __future__ import annotations

import json

import fire

from openus_monai.options import as_flag, as_names


def _as_list(value) -> list:
    """A command-line value as a list: None -> [], a list or tuple as is, anything else as one item."""
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


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

        return synthesize_dataset(out_dir, n=n, seed=seed, size=size, overwrite=as_flag(overwrite, "--overwrite"))

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

    def catalog(self, json: bool = False) -> str:  # noqa: A002 (the flag is --json)
        """Print the dataset catalog: name, organ, published image count, task, licence, the published lists that
        name each dataset (OpenUS's table, USF-MAE's OpenUS-46, ...) and, at the end, how many each list names.

        Args:
            json: print the full entries (layouts and per-list rows included) as JSON.

        Returns:
            the table or the JSON text.
        """
        import json as json_module

        from openus_monai.data.catalog import catalog_table, load_catalog

        return json_module.dumps(load_catalog(), indent=1) if as_flag(json, "--json") else catalog_table()

    def prepare(
        self, root: str, out: str, dataset: str | None = None, cache: bool = False, frame_stride: int = 1,
        seed: int = 0, progress: bool = True, published_splits: bool = True,
    ) -> str:
        """Turn a download ROOT into OUT/datalist.json, OUT/report.json and OUT/report.csv (see data/prepare.py).

        Args:
            root: the download (never written to).
            out: output folder.
            dataset: catalog name (default: matched by ROOT's folder name, else a generic layout).
            cache: write 8-bit PNGs of every frame under OUT/cache and list those.
            frame_stride: keep every N-th frame of videos, cines and volumes.
            seed: seed of drawn splits.
            progress: show progress bars (only on a terminal); false/0/no/off turns them off.
            published_splits: keep published splits; False draws leak-free ones (groups and near duplicates).

        Returns:
            the summary table.
        """
        from openus_monai.data.prepare import prepare, summary_table

        summary = prepare(root, out, dataset=dataset, cache=as_flag(cache, "--cache"), frame_stride=frame_stride, seed=seed,
                          progress=as_flag(progress, "--progress"), published_splits=as_flag(published_splits, "--published_splits"))
        reasons = "\n".join(f"  skipped {n:6d}: {r}" for r, n in summary["skip_reasons"].items())
        if summary["duplicate_groups_across_published_splits"]:
            reasons += f"\n  {summary['duplicate_groups_across_published_splits']} near-duplicate groups straddle the published splits (--published_splits False redraws them)"
        return summary_table([summary]) + ("\n" + reasons if reasons else "") + f"\nwrote {out}/datalist.json, report.json, report.csv"

    def dedup(self, *datalists: str, out: str, exclude: str | tuple | None = None, radius: int | None = None,
              progress: bool = True) -> dict:
        """Exact and near duplicates in DATALISTS (groups.json/.csv in OUT); with EXCLUDE, copies without test leaks.

        Args:
            datalists: datalist JSON files.
            out: output folder.
            exclude: test datalist(s), comma-separated or a list; their images (and near copies) are removed from
                the written inputs.
            radius: near-duplicate Hamming radius of the 64-bit hash (default data.dedup.DEFAULT_RADIUS).
            progress: show a progress bar (only on a terminal); false/0/no/off turns it off.

        Returns:
            the summary (groups, entries in groups, removed per datalist).
        """
        from openus_monai.data.dedup import DEFAULT_RADIUS, dedup

        return dedup(list(datalists), out, exclude=as_names(exclude), radius=DEFAULT_RADIUS if radius is None else radius,
                     progress=as_flag(progress, "--progress"))

    def corpus(self, root: str, out: str, exclude: str | tuple | None = None, frame_stride: int = 5,
               radius: int | None = None, progress: bool = True) -> str:
        """One deduplicated pretraining datalist from every dataset under ROOT, EXCLUDE test sets held out.

        Prepares each dataset (cached PNGs), deduplicates across them, removes the EXCLUDE test sets and their
        near copies, and writes OUT/datalist.json (one pretraining list) and OUT/summary.csv (per source: images,
        frames, organ).

        Args:
            root: folder of downloads (each sub-folder a dataset; ``raw/`` folders are looked into).
            out: output folder.
            exclude: test datalist(s), or dataset folder names whose ``test`` list must be held out, comma-separated
                or a list (e.g. busi,ddti); checked before anything is prepared.
            frame_stride: keep every N-th frame of videos, cines and volumes.
            radius: near-duplicate Hamming radius (default data.dedup.DEFAULT_RADIUS).
            progress: show progress bars (only on a terminal); false/0/no/off turns them off.

        Returns:
            the per-source summary table.
        """
        from openus_monai.data.corpus import build_corpus
        from openus_monai.data.dedup import DEFAULT_RADIUS

        return build_corpus(root, out, exclude=as_names(exclude), frame_stride=frame_stride,
                            radius=DEFAULT_RADIUS if radius is None else radius, progress=as_flag(progress, "--progress"))["table"]

    def export_backbone(self, checkpoint: str, out: str, key: str | None = None, meta: dict | None = None) -> str:
        """Write the teacher encoder of a pretraining CHECKPOINT to OUT, self-describing where the checkpoint says.

        Accepts this project's checkpoints (``network`` entry; written as weights + the encoder's class and
        arguments, as the bundle's ``backbone.pt``) and original OpenUS ones (``teacher``; a plain state dict);
        the result loads with ``openus_monai.networks.load_openus_checkpoint`` and the bundles' ``pretrained``.

        Args:
            checkpoint: the pretraining checkpoint (loaded with ``weights_only=True``).
            out: the file to write (atomically).
            key: entry to read, e.g. ``student`` (default: the teacher).
            meta: provenance added to the file's ``meta``, e.g. "{'corpus': 'runs/corpus', 'epochs': 30}".

        Returns:
            the path written.
        """
        from openus_monai.networks.export import export_backbone

        return str(export_backbone(checkpoint, out, key, meta=meta))

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
            pretrained: the arms: a checkpoint, a list, or "{'openus': 'enc.pt', 'control': 'random:enc.pt', 'unet': ''}";
                "random:FILE" = FILE's encoder with random weights; "" (default) = the bundle's encoder, random;
                an arm with options: "{'frozen': {'pretrained': 'enc.pt', 'freeze_encoder': True}, 'basicunet':
                {'config_file': 'configs/baselines/basicunet.json'}, 'ablation': {'pretrained': 'b.pt', 'ratios': [0.1]}}".
            config_file: extra config(s) merged after train.json, e.g. configs/tiny.json.
            overrides: bundle overrides for every run, e.g. "{'max_epochs': 50, 'dataset_dir': '/data/busi'}".
            metrics: metric keys to plot (default: all numbers in metrics.json but n_*).
            resume: reuse finished runs (eval/metrics.json, and run.json with the same configs and overrides).
            in_process: run the bundle in this process instead of one subprocess per run.

        Returns:
            the paths written and the summary rows.
        """
        import logging

        from openus_monai.studies.label_efficiency import run_label_efficiency

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

        result = run_label_efficiency(
            bundle, output_dir, ratios=_as_list(ratios), seeds=_as_list(seeds),
            pretrained=pretrained if isinstance(pretrained, dict) else _as_list(pretrained) or None,
            config_files=_as_list(config_file) or (), overrides=overrides,
            metrics=_as_list(metrics) or None, resume=as_flag(resume, "--resume"), in_process=as_flag(in_process, "--in_process"),
        )
        return {k: result[k] for k in ("csv", "summary_csv", "plot", "summary")}

    def compare_recipes(
        self,
        output_dir: str = "runs/compare_recipes",
        dataset_dir: str = "",
        recipes: str | tuple | dict = ("openus", "usf_mae", "usfm"),
        pretrain_config: str | tuple | None = None,
        pretrain_overrides: dict | None = None,
        tasks: str | tuple | dict = ("segmentation", "classification"),
        ratios: float | tuple = (0.1, 1.0),
        seeds: int | tuple = (0,),
        config_file: str | tuple | None = None,
        overrides: dict | None = None,
        random_controls: bool = False,
        resume: bool = True,
        in_process: bool = False,
    ) -> str:
        """Pretrain each recipe (openus, usf_mae, usfm) on the same data, fine-tune each the same way, tabulate.

        Writes OUTPUT_DIR/compare_recipes.csv and .md (mean ± std over seeds per recipe, task, label ratio and
        metric), compare_recipes_runs.csv, compare_recipes.png and pretraining.csv; resumable (finished
        pretrainings and fine-tuning runs are reused; --resume False redoes them).

        Args:
            output_dir: study folder.
            dataset_dir: pretraining data for every recipe (folder or datalist.json; "" = demo data).
            recipes: recipe names (their CPU-scale configs), or "{'usfm': ['recipes/usfm.json', ...]}".
            pretrain_config: config(s) merged after the pretraining train.json, before each recipe's.
            pretrain_overrides: the shared pretraining budget and seed, e.g. "{'max_epochs': 5, 'seed': 0}".
            tasks: segmentation, classification, or "{'segmentation': SEG_DIR, 'classification': CLS_DIR}", or per task
                a dict of its runs' overrides, "{'segmentation': {'dataset_dir': SEG_DIR, 'image_size': [96, 96]}}".
            ratios: fine-tuning label ratios.
            seeds: fine-tuning seeds.
            config_file: config(s) merged after the downstream bundles' train.json, e.g. configs/tiny.json.
            overrides: overrides of every fine-tuning run, e.g. "{'max_epochs': 20}".
            random_controls: also fine-tune each recipe's architecture from random weights.
            resume: reuse finished steps.
            in_process: run the bundles in this process.

        Returns:
            the Markdown table and the files written.
        """
        import logging

        from openus_monai.studies.compare_recipes import run_compare_recipes

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

        result = run_compare_recipes(
            output_dir, dataset_dir=dataset_dir, recipes=recipes if isinstance(recipes, dict) else _as_list(recipes),
            pretrain_configs=_as_list(pretrain_config), pretrain_overrides=pretrain_overrides,
            tasks=tasks if isinstance(tasks, dict) else _as_list(tasks), ratios=_as_list(ratios), seeds=_as_list(seeds),
            downstream_configs=_as_list(config_file), downstream_overrides=overrides, random_controls=random_controls,
            resume=as_flag(resume, "--resume"), in_process=as_flag(in_process, "--in_process"),
        )
        files = "\n".join(f"wrote {result[k]}" for k in ("csv", "markdown", "runs_csv", "plot", "pretraining_csv"))
        with open(result["markdown"], encoding="utf-8") as f:
            return f.read() + files

    def foundation_study(
        self,
        weights: str,
        output_dir: str = "runs/foundation_study",
        sources: str = "runs/corpus/sources",
        tasks: str | tuple = ("busi_seg", "busi_cls", "ddti_seg", "usgra_seg"),
        arms: str | tuple = ("openus", "openus_frozen", "random", "random_frozen", "baseline"),
        ratios: float | tuple = 0.1,
        seeds: int | tuple = (0, 1, 2),
        max_epochs: int = 12,
        image_size: int = 96,
        batch_size: int = 8,
        val_interval: int = 4,
        ablation: str | None = None,
        config_file: str | tuple | None = None,
        overrides: dict | None = None,
        resume: bool = True,
    ) -> str:
        """The foundation study: label-efficiency runs of every task and arm, resumable; tables per task and in all.

        Runs each (task, arm, ratio, seed) as one bundle subprocess with one thread; writes per task
        OUTPUT_DIR/TASK/label_efficiency.csv, label_efficiency.png and table.md (mean +- std over seeds, one row
        per arm, one column per ratio, paired differences pretrained - random), and OUTPUT_DIR/results.md.

        Args:
            weights: the pretrained encoder file (e.g. weights/openus_us_small.pt).
            output_dir: study folder; finished runs in it are reused (resume).
            sources: prepared data sets, one folder per task's source (the corpus command's sources/).
            tasks: of busi_seg, busi_cls, ddti_seg, usgra_seg.
            arms: of openus (fine-tuned), openus_frozen, random (same encoder, random init), random_frozen (its frozen control), baseline
                (BasicUNet / DenseNet121), ablation (needs --ablation).
            ratios: label ratios, e.g. "[0.1,0.25,1.0]".
            seeds: seeds, e.g. "[0,1,2]".
            max_epochs: epochs of every run.
            image_size: training image side in pixels.
            batch_size: batch size of every run.
            val_interval: validate every N epochs (the best validation checkpoint is tested); a divisor of max_epochs.
            ablation: a second encoder file (e.g. pretrained with random masking), run at label ratio 0.1.
            config_file: extra config(s) for every bundle, e.g. configs/tiny.json (looked up in each bundle).
            overrides: more bundle overrides for every run.
            resume: reuse finished runs (same configs and overrides); False runs everything again.

        Returns:
            the combined Markdown (also written to OUTPUT_DIR/results.md).
        """
        import logging

        from openus_monai.studies.foundation import run_foundation_study

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

        result = run_foundation_study(
            weights, output_dir, sources, tasks=_as_list(tasks), arms=_as_list(arms), ratios=_as_list(ratios),
            seeds=_as_list(seeds), max_epochs=max_epochs, image_size=image_size, batch_size=batch_size,
            val_interval=val_interval, ablation=ablation, config_files=_as_list(config_file), overrides=overrides,
            resume=as_flag(resume, "--resume"),
        )
        with open(result["results"], encoding="utf-8") as f:
            return f.read()

    def foundation_merge(self, *study_dirs: str, output_dir: str) -> str:
        """Join finished foundation studies (e.g. one per label ratio) into one table and plot per task.

        Reads every STUDY_DIR/TASK/label_efficiency.csv and writes OUTPUT_DIR/TASK/label_efficiency.csv,
        label_efficiency.png and table.md, and OUTPUT_DIR/results.md; runs nothing. A run (task, arm, ratio,
        seed) found in two studies is an error.

        Args:
            study_dirs: folders written by foundation-study.
            output_dir: a new folder for the joined tables.

        Returns:
            the combined Markdown (also written to OUTPUT_DIR/results.md).
        """
        from openus_monai.studies.foundation import merge_foundation_studies

        result = merge_foundation_studies(study_dirs, output_dir)
        with open(result["results"], encoding="utf-8") as f:
            return f.read()


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
