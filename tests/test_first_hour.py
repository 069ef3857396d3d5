"""What a new user sees: the real error on top, a run summary, progress bars only on a terminal, quiet HD95."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.metrics import HausdorffDistanceMetric

from openus_monai.bundle.errors import format_config_error, shorten_message, unwrap_config_error
from openus_monai.handlers import RunSummaryHandler, TerminalProgressBar
from openus_monai.handlers.hausdorff import EmptyAwareHausdorffDistanceMetric
from openus_monai.handlers.run_summary import describe_entries, format_duration


def _config_error(config: dict, key: str) -> BaseException:
    parser = ConfigParser(config)
    with pytest.raises(RuntimeError) as info:
        parser.get_parsed_content(key)
    return info.value


def test_config_error_unwrapped_to_the_original():
    err = _config_error({"n": "$int('seven')", "m": "$@n + 1"}, "m")
    original, items = unwrap_config_error(err)
    assert isinstance(original, ValueError) and "seven" in str(original)
    assert items and all(i.startswith("Failed to evaluate") for i in items) and "int('seven')" in " ".join(items)
    text = format_config_error(err)
    assert text.rstrip().splitlines()[-1].startswith("ValueError: invalid literal for int()")
    assert "Failed to evaluate" not in text.rstrip().splitlines()[-1]
    plain = ValueError("not wrapped")
    assert unwrap_config_error(plain) == (plain, []) and format_config_error(plain) is None


def test_long_state_dict_message_shortened_with_a_hint():
    lines = ["Error(s) in loading state_dict for OpenUSSegNet:"]
    lines += [f"\tsize mismatch for encoder.layers.{i}.weight: copying a param with shape [16] ..." for i in range(300)]
    wrapped = RuntimeError("Failed to evaluate ConfigExpression: '$@evaluator.run()'")
    wrapped.__cause__ = RuntimeError("\n".join(lines))
    text = format_config_error(wrapped)
    assert len(text.splitlines()) < 30, text
    assert "293 more lines" in text and "tiny.json" in text
    assert shorten_message("a\nb", max_lines=8) == "a\nb"


def _engine(entries, out_dir) -> Engine:
    def step(engine, batch):
        (out_dir / f"mask_{engine.state.iteration}.png").write_bytes(b"x")
        return {"loss": 0.0}

    engine = Engine(step)
    engine.data_loader = DataLoader(Dataset(entries), batch_size=2)
    return engine


def test_run_summary_counts_classes_and_outputs(tmp_path, caplog):
    out = tmp_path / "masks"
    out.mkdir()
    (out / "old.png").write_bytes(b"from before")
    entries = [{"image": f"/x/{i}.png", "label": i % 2} for i in range(5)]
    engine = _engine(entries, out)
    RunSummaryHandler("test run", outputs={"masks": str(out), "metrics": str(tmp_path / "none.json")},
                      class_names=["benign", "malignant"]).attach(engine)
    os.utime(out / "old.png", (0, 0))  # written long before the run
    with caplog.at_level(logging.INFO, logger="openus_monai.summary"):
        engine.run(engine.data_loader, max_epochs=1)
    text = caplog.text
    assert "training: 5 images (benign 3, malignant 2)" in text
    assert "test run finished in" in text
    assert f"masks: 3 files written in {out}" in text  # 3 iterations; old.png not counted
    assert "none.json (not written)" in text


def test_describe_entries_and_duration():
    assert describe_entries([{"image": "a.png", "label": "m.png"}]) == "1 image"  # masks are not classes
    assert describe_entries([{"image": "a", "label": "normal"}, {"image": "b", "label": "benign"}]) == "2 images (benign 1, normal 1)"
    assert format_duration(4.25) == "4.2s" and format_duration(125) == "2m05s" and format_duration(3725) == "1h02m05s"


@pytest.mark.parametrize("flag,expected", [("0", False), ("1", True)])
def test_progress_bar_only_when_asked_or_on_a_terminal(monkeypatch, flag, expected):
    monkeypatch.setenv("OPENUS_MONAI_PROGRESS", flag)
    engine = Engine(lambda e, b: 0.0)
    before = sum(len(v) for v in engine._event_handlers.values())
    TerminalProgressBar("train").attach(engine)
    assert (sum(len(v) for v in engine._event_handlers.values()) > before) == expected


def _onehot(mask: torch.Tensor) -> torch.Tensor:
    return torch.stack([1 - mask, mask]).float()


def test_hd95_empty_reference_is_nan_without_warnings():
    a, b, empty = torch.zeros(16, 16), torch.zeros(16, 16), torch.zeros(16, 16)
    a[4:10, 4:10] = 1
    b[5:11, 4:12] = 1
    pred = torch.stack([_onehot(b), _onehot(b), _onehot(empty), _onehot(empty)])
    ref = torch.stack([_onehot(a), _onehot(empty), _onehot(a), _onehot(empty)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = EmptyAwareHausdorffDistanceMetric(percentile=95)(pred, ref).flatten()
    assert not caught, [str(w.message) for w in caught]
    expected = HausdorffDistanceMetric(percentile=95)(pred[:1], ref[:1]).flatten()
    assert torch.allclose(out[:1], expected) and out[0] > 0
    assert torch.isnan(out[1]) and torch.isinf(out[2]) and torch.isnan(out[3])


def test_pretraining_picture_written_as_labelled_png(tmp_path):
    from PIL import Image

    from openus_monai.handlers.picture_png import OPENUS_PANEL_TITLES, save_panels_png

    panels = {name: torch.rand(1, 32, 32) for name in OPENUS_PANEL_TITLES}
    path = save_panels_png(panels, tmp_path / "pictures" / "masking_epoch0001.png", title="epoch 1")
    with Image.open(path) as im:
        array = np.asarray(im.convert("RGB"))
    # six panels enlarged to 128 px, gaps between them, two title strips above
    assert array.shape == (128 + 36, 6 * 128 + 5 * 4, 3)
    assert array[:18].max() > 200 and array[18:36].max() > 200, "no title text drawn"
    with pytest.raises(ValueError, match="panel"):
        save_panels_png({"bad": torch.rand(2, 2, 2, 2)}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_top_level_help_lists_every_command_as_the_readme_spells_it():
    import re

    from openus_monai.__main__ import OpenUSCLI, command_overview

    text = command_overview()
    commands = [n for n, v in vars(OpenUSCLI).items() if callable(v) and not n.startswith("_")]
    for name in commands:
        assert re.search(rf"^  {re.escape(name.replace('_', '-'))}\s+\S", text, re.M), name
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    used = set(re.findall(r"python -m openus_monai ([a-z_-]+)", readme))
    assert not {u for u in used if "_" in u}, f"README spells commands with underscores: {used}"


def test_run_summary_logs_checkpoint_paths(tmp_path, caplog):
    from monai.handlers import CheckpointSaver

    net = torch.nn.Linear(2, 1)
    engine = _engine([{"image": "a.png"}] * 2, tmp_path)
    RunSummaryHandler("train").attach(engine)
    CheckpointSaver(str(tmp_path / "models"), {"net": net}, file_prefix="t", epoch_level=True, save_interval=1).attach(engine)
    with caplog.at_level(logging.INFO, logger="openus_monai.summary"):
        engine.run(engine.data_loader, max_epochs=2)
    written = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert len(written) == 2
    for epoch, name in enumerate(written, start=1):
        assert f"checkpoint written: {tmp_path / 'models' / name} (epoch {epoch})" in caplog.text
    assert f"checkpoints: {tmp_path / 'models'} ({written[-1]})" in caplog.text
