"""The label-efficiency study: runs per (init, ratio, seed), distinct outputs, CSV, summary, plot, resume,
bundle-agnostic; one real (tiny, in-process) run of the segmentation bundle through the CLI method."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from openus_monai.studies.label_efficiency import bundle_command, normalize_pretrained, run_label_efficiency, summarize_runs

from _helpers import demo_dataset

REPO = Path(__file__).resolve().parents[1]
SEG = REPO / "bundles" / "openus_seg"



def _fake_bundle(root: Path) -> Path:
    """A bundle with the shared conventions and nothing else: the study must not care what it does."""
    (root / "configs").mkdir(parents=True)
    for name in ("train.json", "evaluate.json", "metadata.json", "extra.json"):
        (root / "configs" / name).write_text("{}\n")
    return root


def _fake_runner(calls: list):
    def runner(run, train_cfgs, eval_cfgs, overrides):
        calls.append((run, train_cfgs, eval_cfgs, dict(overrides)))
        bonus = 0.1 if run.pretrained else 0.0
        summary = {"accuracy": 0.5 * run.label_ratio + 0.01 * run.seed + bonus, "f1": 0.4 * run.label_ratio, "n_images": 10, "split": "test"}
        Path(overrides["output_dir"]).mkdir(parents=True, exist_ok=True)
        (Path(overrides["output_dir"]) / "metrics.json").write_text(json.dumps(summary))
    return runner


def test_study_table_summary_plot_resume(tmp_path):
    bundle = _fake_bundle(tmp_path / "bundle")
    enc = tmp_path / "enc.pt"
    enc.write_bytes(b"x")
    calls: list = []
    result = run_label_efficiency(
        bundle, tmp_path / "study", ratios=[0.2, 0.6, 1.0], seeds=[0, 1], pretrained={"random": "", "openus": str(enc)},
        config_files=["configs/extra.json"], overrides={"max_epochs": 3}, runner=_fake_runner(calls),
    )
    assert len(calls) == 2 * 3 * 2
    outs = {c[3]["output_dir"] for c in calls} | {c[3]["ckpt_dir"] for c in calls}
    assert len(outs) == 2 * len(calls), "every run needs its own ckpt_dir and output_dir"
    for run, train_cfgs, eval_cfgs, overrides in calls:
        assert train_cfgs == [str(bundle / "configs" / "train.json"), str(bundle / "configs" / "extra.json")]
        assert eval_cfgs == [*train_cfgs, str(bundle / "configs" / "evaluate.json")]
        assert overrides["label_ratio"] == run.label_ratio and overrides["seed"] == run.seed and overrides["max_epochs"] == 3
        assert overrides["pretrained"] == (str(enc) if run.name == "openus" else None)

    rows = list(csv.DictReader(open(result["csv"])))
    assert len(rows) == 12 and {"name", "pretrained", "label_ratio", "seed", "accuracy", "f1"} <= set(rows[0])
    assert result["metrics"] == ["accuracy", "f1"]  # counts (n_*) and text are not metrics
    summary = {(r["name"], float(r["label_ratio"])): r for r in csv.DictReader(open(result["summary_csv"]))}
    cell = summary[("openus", 0.6)]
    assert float(cell["accuracy_mean"]) == pytest.approx(0.3 + 0.005 + 0.1)
    assert float(cell["accuracy_std"]) == pytest.approx(math.sqrt(2 * 0.005**2))
    assert int(cell["n_seeds"]) == 2
    plot = Path(result["plot"])
    assert plot.is_file() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def must_not_run(*args):
        raise AssertionError("resume must reuse finished runs")

    again = run_label_efficiency(bundle, tmp_path / "study", ratios=[0.2, 0.6, 1.0], seeds=[0, 1],
                                 pretrained={"random": "", "openus": str(enc)}, config_files=["configs/extra.json"],
                                 overrides={"max_epochs": 3}, metrics=["f1"], resume=True, runner=must_not_run)
    assert again["metrics"] == ["f1"] and len(again["rows"]) == 12
    # other settings (here the epochs) are another run: resume does not reuse a result made with different ones
    calls.clear()
    run_label_efficiency(bundle, tmp_path / "study", ratios=[0.2], seeds=[0], pretrained={"random": ""},
                         config_files=["configs/extra.json"], overrides={"max_epochs": 4}, resume=True, runner=_fake_runner(calls))
    assert len(calls) == 1 and calls[0][3]["max_epochs"] == 4
    # so is a checkpoint rewritten under the same name (a later export of the encoder)
    enc.write_bytes(b"y")
    calls.clear()
    run_label_efficiency(bundle, tmp_path / "study", ratios=[0.2, 0.6, 1.0], seeds=[0, 1], pretrained={"random": "", "openus": str(enc)},
                         config_files=["configs/extra.json"], overrides={"max_epochs": 3}, resume=True, runner=_fake_runner(calls))
    # every openus run again; of the random arm only the run last made with 4 epochs
    assert sorted((c[0].name, c[0].label_ratio, c[0].seed) for c in calls if c[0].name == "random") == [("random", 0.2, 0)]
    assert len(calls) == 7
    # and so is a config file edited under the same name
    extra = bundle / "configs" / "extra.json"
    extra.write_text(extra.read_text() + "\n")
    calls.clear()
    run_label_efficiency(bundle, tmp_path / "study", ratios=[0.2], seeds=[0], pretrained={"random": ""},
                         config_files=["configs/extra.json"], overrides={"max_epochs": 3}, resume=True, runner=_fake_runner(calls))
    assert len(calls) == 1


def test_study_arguments_checked(tmp_path):
    bundle = _fake_bundle(tmp_path / "bundle")
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        run_label_efficiency(bundle, tmp_path / "s", ratios=[0.0, 0.5], runner=_fake_runner([]))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        run_label_efficiency(bundle, tmp_path / "s", pretrained=["missing.pt"], runner=_fake_runner([]))
    with pytest.raises(ValueError, match="dice"):
        run_label_efficiency(bundle, tmp_path / "s", ratios=[1.0], seeds=[0], metrics=["dice"], runner=_fake_runner([]))
    with pytest.raises(FileNotFoundError, match="not a bundle"):
        run_label_efficiency(tmp_path, tmp_path / "s", runner=_fake_runner([]))
    assert normalize_pretrained(["", "a/enc.pt".replace("a/enc.pt", str(bundle / "configs" / "train.json"))]) == {
        "random": None, "train": str(bundle / "configs" / "train.json")}


def test_random_init_arm_passes_the_file_and_init_random(tmp_path):
    """"random:FILE" and {"pretrained": FILE, "init": "random"}: the bundle gets pretrained=FILE and init=random."""
    bundle = _fake_bundle(tmp_path / "bundle")
    enc = tmp_path / "enc.pt"
    enc.write_bytes(b"x")
    arms = normalize_pretrained({"openus": str(enc), "ctrl": {"pretrained": str(enc), "init": "random"}, "unet": ""})
    assert arms == {"openus": str(enc), "ctrl": f"random:{enc}", "unet": None}
    assert normalize_pretrained([str(enc), f"random:{enc}"]) == {"enc": str(enc), "enc_random": f"random:{enc}"}
    with pytest.raises(ValueError, match="init"):
        normalize_pretrained({"x": {"pretrained": str(enc), "init": "imagenet"}})
    with pytest.raises(FileNotFoundError):
        normalize_pretrained("random:" + str(tmp_path / "missing.pt"))
    calls: list = []
    result = run_label_efficiency(bundle, tmp_path / "study", ratios=[1.0], seeds=[0], pretrained=arms, runner=_fake_runner(calls))
    got = {run.name: (o["pretrained"], o["init"]) for run, _, _, o in calls}
    assert got == {"openus": (str(enc), "pretrained"), "ctrl": (str(enc), "random"), "unet": (None, "pretrained")}
    rows = {r["name"]: r for r in csv.DictReader(open(result["csv"]))}
    assert rows["ctrl"]["init"] == "random" and rows["ctrl"]["pretrained"] == str(enc)


def test_summary_and_command():
    rows = [{"name": "r", "label_ratio": 0.5, "dice": v} for v in (0.2, 0.4, float("nan"))]
    (cell,) = summarize_runs(rows, ["dice"])
    assert cell["dice_mean"] == pytest.approx(0.3) and cell["dice_std"] == pytest.approx(math.sqrt(0.02)) and cell["n_seeds"] == 3
    cmd = bundle_command(SEG, ["a.json", "b.json"], {"pretrained": None, "label_ratio": 0.2, "encoder": {"dims": 16}}, "training")
    assert cmd[1:5] == ["-m", "monai.bundle", "run", "training"]
    assert cmd[cmd.index("--config_file") + 1] == "['a.json', 'b.json']"
    assert cmd[cmd.index("--pretrained") + 1] == "None" and cmd[cmd.index("--encoder") + 1] == "{'dims': 16}"
    assert cmd[cmd.index("--bundle_root") + 1] == str(SEG)


def test_cli_command_registered():
    out = subprocess.run([sys.executable, "-m", "openus_monai", "label-efficiency", "--help"], cwd=REPO,
                         capture_output=True, text=True, env={"PAGER": "cat", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert out.returncode == 0 and "--ratios" in out.stdout + out.stderr


def test_real_segmentation_study_in_process(tmp_path):
    """Two ratios of the real bundle (tiny, 1 epoch, 32 px): metrics.json per run, Dice in the table."""
    from openus_monai.__main__ import OpenUSCLI

    data = str(demo_dataset(tmp_path / "demo", n=24, size=64))
    result = OpenUSCLI().label_efficiency(
        bundle=str(SEG), output_dir=str(tmp_path / "study"), ratios=(0.5, 1.0), seeds=0, pretrained="",
        config_file="configs/tiny.json", in_process=True, metrics=("dice", "iou"),
        overrides={"dataset_dir": data, "max_epochs": 1, "image_size": [32, 32], "max_train_images": None},
    )
    rows = list(csv.DictReader(open(result["csv"])))
    assert [float(r["label_ratio"]) for r in rows] == [0.5, 1.0]
    for r in rows:
        assert 0.0 <= float(r["dice"]) <= 1.0
        assert (Path(r["run_dir"]) / "models" / "model.pt").is_file()
        assert json.loads((Path(r["run_dir"]) / "eval" / "metrics.json").read_text())["n_images"] > 0
    assert Path(result["plot"]).is_file()
