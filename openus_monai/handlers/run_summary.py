"""A short summary at the start and end of every run: what it read, where it writes, how long it took."""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.utils import optional_import

Engine, _ = optional_import("ignite.engine", name="Engine")
Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["RunSummaryHandler", "describe_entries", "format_duration"]

logger = logging.getLogger("openus_monai.summary")


def format_duration(seconds: float) -> str:
    """``"1h02m03s"``, ``"2m03s"`` or ``"4.2s"``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"


def describe_entries(entries: Sequence[Any], class_names: Sequence[str] | None = None, label_key: str = "label") -> str:
    """``"12 images (benign 4, malignant 4, normal 4)"``: the count, and per class where entries have classes.

    Args:
        entries: datalist entries (dicts); ``label`` an int index into ``class_names`` or a class name
            counts per class; a mask path (segmentation) does not.
        class_names: names of integer labels.
        label_key: the key of the class.

    Returns:
        one line.
    """
    labels = [e.get(label_key) for e in entries if isinstance(e, Mapping)]
    text = f"{len(entries)} image{'s' if len(entries) != 1 else ''}"
    classes = [_class_name(v, class_names) for v in labels if v is not None]
    if classes and len(classes) == len(entries) and all(c is not None for c in classes):
        counts = Counter(classes)
        text += " (" + ", ".join(f"{c} {counts[c]}" for c in sorted(counts, key=str)) + ")"
    return text


def _class_name(value: Any, class_names: Sequence[str] | None) -> str | None:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(class_names[value]) if class_names is not None and 0 <= value < len(class_names) else str(value)
    if isinstance(value, str) and not os.path.splitext(value)[1]:  # a class name, not a mask path
        return value
    return None


def _dataset_entries(engine: Engine) -> Sequence[Any] | None:
    dataset = getattr(getattr(engine, "data_loader", None), "dataset", None)
    data = getattr(dataset, "data", None)
    return data if isinstance(data, Sequence) else None


def _attached(engine: Engine) -> list[Any]:
    """The handler objects whose methods are attached to ``engine`` (Ignite keeps no public list of them)."""
    found: list[Any] = []
    for handlers in getattr(engine, "_event_handlers", {}).values():
        for entry in handlers:
            fn = inspect.unwrap(entry[0])  # event filters wrap the handler (functools.wraps)
            owner = getattr(fn, "__self__", None)
            if owner is None and not inspect.isfunction(fn) and callable(fn):
                owner = fn  # a handler object attached as itself (e.g. ValidationHandler)
            if owner is not None and all(owner is not f for f in found):
                found.append(owner)
    return found


class RunSummaryHandler:
    """Logs what a run reads when it starts, and what it wrote, where, and how long it took when it ends.

    Found on the engine (and on the evaluator of a ``ValidationHandler``) without configuration: the
    data set sizes (per class where labels are classes), MONAI ``CheckpointSaver`` folders and the files
    they wrote, TensorBoard log folders and MLflow runs. ``outputs`` adds what the run writes by other
    means (masks, metrics, predictions): a folder is reported with the number of files written in it
    during the run.

    Args:
        name: what the run is, e.g. ``"segmentation training"``.
        outputs: label -> file or folder, e.g. ``{"masks": "/out/masks", "metrics": "/out/metrics.json"}``.
        class_names: names of integer class labels (classification).
        splits: names of the engine's data and of its validator's data in the summary.
    """

    def __init__(
        self,
        name: str = "run",
        outputs: Mapping[str, str] | None = None,
        class_names: Sequence[str] | None = None,
        splits: Sequence[str] = ("training", "validation"),
    ) -> None:
        self.name = name
        self.outputs = {str(k): str(v) for k, v in (outputs or {}).items() if v}
        self.class_names = list(class_names) if class_names is not None else None
        self.splits = tuple(splits)
        self.created = _process_start()  # config parsing and data caching count too
        self.started: float | None = None
        self._saved: dict[str, float] = {}  # checkpoint path -> modification time last logged

    def attach(self, engine: Engine) -> None:
        """Log at ``STARTED`` and ``COMPLETED`` of ``engine``."""
        engine.add_event_handler(Events.STARTED, self.on_started)
        engine.add_event_handler(Events.COMPLETED, self.on_completed)

    def _engines(self, engine: Engine) -> list[tuple[str, Engine]]:
        engines = [(self.splits[0], engine)]
        for handler in _attached(engine):
            validator = getattr(handler, "validator", None)
            if validator is not None and len(self.splits) > 1:
                engines.append((self.splits[1], validator))
        return engines

    def read_lines(self, engine: Engine) -> list[str]:
        """One line per data set the run reads."""
        lines = []
        for split, eng in self._engines(engine):
            entries = _dataset_entries(eng)
            if entries is not None:
                lines.append(f"  {split}: {describe_entries(entries, self.class_names)}")
        return lines

    def written_lines(self, engine: Engine, since: float | None = None) -> list[str]:
        """One line per output: checkpoints, TensorBoard, MLflow, and ``outputs``."""
        lines: list[str] = []
        seen: set[str] = set()
        checkpoints: dict[str, list[str]] = {}  # folder -> files, over every saver writing there

        def add(line: str) -> None:
            if line not in seen:
                seen.add(line)
                lines.append(line)

        for _, eng in self._engines(engine):
            for handler in _attached(eng):
                kind = type(handler).__name__
                if kind == "CheckpointSaver":
                    checkpoints.setdefault(str(handler.save_dir), []).extend(_checkpoint_files(handler))
                elif hasattr(handler, "_writer") and hasattr(handler._writer, "log_dir"):
                    add(f"  TensorBoard: {handler._writer.log_dir}  (tensorboard --logdir {handler._writer.log_dir})")
                elif kind == "MLFlowHandler":
                    add(f"  MLflow: {_mlflow_location(handler)}")
        for folder, files in checkpoints.items():
            add(f"  checkpoints: {folder}" + (f" ({', '.join(sorted(set(files)))})" if files else ""))
        for label, path in self.outputs.items():
            add(f"  {label}: {_describe_output(Path(path), since)}")
        return lines

    def _savers(self, engine: Engine) -> list[Any]:
        return [h for _, eng in self._engines(engine) for h in _attached(eng) if type(h).__name__ == "CheckpointSaver"]

    def log_new_checkpoints(self, engine: Engine) -> None:
        """Log the full path of every checkpoint file written since the last call."""
        for saver in self._savers(engine):
            for name in _checkpoint_files(saver):
                path = os.path.join(str(saver.save_dir), name)
                mtime = os.path.getmtime(path) if os.path.isfile(path) else None
                if mtime is not None and self._saved.get(path) != mtime:  # new, or rewritten (model.pt)
                    self._saved[path] = mtime
                    logger.info("checkpoint written: %s (epoch %d)", path, engine.state.epoch)

    def on_started(self, engine: Engine) -> None:
        """Log the data read and where the outputs go."""
        if self.started is None and self._savers(engine):
            # attached now, after every saver (they attach before the run starts), so it runs after them
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.log_new_checkpoints)
        self.started = time.time()
        lines = self.read_lines(engine)
        if lines:
            logger.info("%s reads:\n%s", self.name, "\n".join(lines))
        lines = self.written_lines(engine)
        if lines:
            logger.info("%s writes to:\n%s", self.name, "\n".join(lines))

    def on_completed(self, engine: Engine) -> None:
        """Log the summary: data read, outputs written, time taken."""
        now = time.time()
        took = format_duration(now - self.created)
        if self.started is not None:
            took += f" (preparing {format_duration(self.started - self.created)}, running {format_duration(now - self.started)})"
        parts = [f"{self.name} finished in {took}"]
        read = self.read_lines(engine)
        if read:
            parts.append("read:\n" + "\n".join(read))
        written = self.written_lines(engine, since=self.created)
        if written:
            parts.append("wrote:\n" + "\n".join(written))
        logger.info("\n".join(parts))


_IMPORTED = time.time()


def _process_start() -> float:
    """When this process started (Linux ``/proc``; elsewhere, when this module was imported)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        boot = next(float(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


def _checkpoint_files(saver: Any) -> list[str]:
    """The files a MONAI ``CheckpointSaver`` wrote last (a fixed ``*_filename`` replaces Ignite's name)."""
    names = []
    for attr in ("_key_metric_checkpoint", "_interval_checkpoint", "_final_checkpoint"):
        checkpoint = getattr(saver, attr, None)
        last = getattr(checkpoint, "last_checkpoint", None) if checkpoint is not None else None
        if last:
            fixed = getattr(getattr(checkpoint, "save_handler", None), "filename", None)
            names.append(os.path.basename(str(fixed or last)))
    return names


def _mlflow_location(handler: Any) -> str:
    client = getattr(handler, "client", None)
    uri = getattr(client, "tracking_uri", None) or getattr(getattr(client, "_tracking_client", None), "tracking_uri", None)
    run = getattr(getattr(handler, "cur_run", None), "info", None)
    text = f"{uri}, experiment {handler.experiment_name!r}"
    if run is not None:
        text += f", run {run.run_id}"
    return text + (f"  (mlflow ui --backend-store-uri {uri})" if uri else "")


def _describe_output(path: Path, since: float | None) -> str:
    if path.is_dir():
        files: Iterable[Path] = (p for p in path.rglob("*") if p.is_file())
        if since is not None:
            files = [p for p in files if p.stat().st_mtime >= since - 1]
            return f"{len(files)} file{'s' if len(files) != 1 else ''} written in {path}"
        return str(path)
    if path.is_file() or since is None:
        return str(path)
    return f"{path} (not written)"
