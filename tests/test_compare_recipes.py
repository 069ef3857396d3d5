"""compare-recipes: every recipe pretrained on the same demo data with the same seed and budget, each encoder
fine-tuned the same way; the same seeds give the same table twice, and a finished study resumes without rerunning."""

from __future__ import annotations

import csv
import json
import os

import pytest

from openus_monai.studies.compare_recipes import markdown_table, run_compare_recipes

from _helpers import demo_dataset

# the two ViT recipes keep the test fast; the OpenUS recipe takes the same path (its pretraining: tests/test_recipes.py)
TINY_RECIPES = {
    "usf_mae": ["recipes/usf_mae.json", "recipes/tiny_vit.json"],
    "usfm": ["recipes/usfm.json", "recipes/tiny_vit.json"],
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_dataset(tmp_path_factory.mktemp("compare_demo") / "demo", n=16, size=64)


def _compare(out, demo, **kwargs):
    return run_compare_recipes(
        out, dataset_dir=str(demo), recipes=TINY_RECIPES, pretrain_configs=["tiny.json"],
        pretrain_overrides={"max_epochs": 1, "seed": 0, "demo_images": 16}, tasks={"classification": str(demo)},
        ratios=[1.0], seeds=[0], downstream_configs=["configs/tiny.json"],
        downstream_overrides={"max_epochs": 1, "max_train_images": 8}, in_process=True, **kwargs,
    )


def _table(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_same_seeds_give_the_same_table_twice_and_a_finished_study_resumes(demo, tmp_path):
    first = _compare(tmp_path / "a", demo)
    assert [(p["method"], p["encoder"]) for p in first["pretraining"]] == [("usf_mae", "ViTEncoder"), ("usfm", "ViTEncoder")]
    table = _table(first["csv"])
    assert {(r["recipe"], r["task"], r["metric"]) for r in table} == {
        (recipe, "classification", m) for recipe in TINY_RECIPES for m in ("macro_f1", "accuracy", "auc")}
    assert all(r["n_seeds"] == "1" and 0.0 <= float(r["mean"]) <= 1.0 for r in table)
    second = _compare(tmp_path / "b", demo)
    assert _table(second["csv"]) == table  # the same seeds, the same numbers
    assert open(second["markdown"], encoding="utf-8").read() == open(first["markdown"], encoding="utf-8").read()
    assert os.path.getsize(first["plot"]) > 0

    stamp = os.path.getmtime(first["pretraining"][0]["backbone"])  # resume: nothing trains again
    again = _compare(tmp_path / "a", demo)
    assert all(p["reused"] for p in again["pretraining"]) and os.path.getmtime(again["pretraining"][0]["backbone"]) == stamp
    assert [p["seconds"] for p in again["pretraining"]] == [p["seconds"] for p in first["pretraining"]]  # the run's own
    assert _table(again["csv"]) == table


def test_a_pretraining_with_other_overrides_or_config_contents_is_not_reused(demo, tmp_path):
    """Resume compares the recorded configs (names and contents) and overrides: a longer budget, or a config
    edited under the same name, trains again instead of reusing."""
    import shutil

    from openus_monai.studies.compare_recipes import _bundle_root, pretrain_recipe

    tiny = tmp_path / "tiny_vit.json"
    shutil.copy(_bundle_root("openus_pretrain") / "configs" / "recipes" / "tiny_vit.json", tiny)

    def pretrain(epochs):
        return pretrain_recipe("usf_mae", tmp_path / "usf_mae", ["recipes/usf_mae.json", str(tiny)],
                               {"max_epochs": epochs, "seed": 0, "demo_images": 16, "dataset_dir": str(demo)}, in_process=True)

    first = pretrain(1)
    assert not first["reused"] and pretrain(1)["reused"]
    second = pretrain(2)
    assert not second["reused"]
    assert json.loads((tmp_path / "usf_mae" / "pretrain.json").read_text())["overrides"]["max_epochs"] == 2
    tiny.write_text(tiny.read_text() + "\n")  # the same settings, other bytes: the record no longer matches
    assert not pretrain(2)["reused"] and pretrain(2)["reused"]


def test_markdown_table_one_row_per_recipe():
    summary = [
        {"recipe": "usfm", "task": "segmentation", "label_ratio": 0.1, "metric": "dice", "mean": 0.5, "std": 0.25, "n_seeds": 2},
        {"recipe": "openus", "task": "classification", "label_ratio": 1.0, "metric": "macro_f1", "mean": 0.75, "std": 0.0, "n_seeds": 2},
        {"recipe": "openus", "task": "segmentation", "label_ratio": 1.0, "metric": "dice", "mean": 0.8, "std": 0.0, "n_seeds": 1},
    ]
    lines = markdown_table(summary, digits=2).splitlines()
    assert lines[0] == "| recipe | segmentation dice @0.1 (n=2) | segmentation dice @1 (n=1) | classification macro_f1 @1 (n=2) |"
    # one seed: the mean alone (a spread of 0.00 would claim a precision never measured)
    assert lines[2:] == ["| usfm | 0.50 ± 0.25 |  |  |", "| openus |  | 0.80 | 0.75 ± 0.00 |"]


def test_per_task_overrides_reach_only_their_task(tmp_path, monkeypatch):
    """``tasks={task: {overrides}}``: each bundle gets its own spelling of e.g. ``image_size``, after the shared ones."""
    import openus_monai.studies.compare_recipes as compare

    seen = {}
    monkeypatch.setattr(compare, "pretrain_recipe", lambda name, *a, **k: {"recipe": name, "backbone": f"{name}.pt"})

    def fake_runs(bundle, out, overrides, **kwargs):
        seen[bundle] = overrides
        return {"rows": []}

    monkeypatch.setattr(compare, "run_label_efficiency", fake_runs)
    monkeypatch.setattr(compare, "plot_label_efficiency", lambda *a, **k: tmp_path / "plot.png")
    compare.run_compare_recipes(
        tmp_path, recipes={"usfm": []}, downstream_overrides={"max_epochs": 3, "image_size": 64},
        tasks={"segmentation": {"dataset_dir": "seg_data", "image_size": [96, 96]}, "classification": "cls_data"},
    )
    assert seen["openus_seg"] == {"max_epochs": 3, "image_size": [96, 96], "dataset_dir": "seg_data"}
    assert seen["openus_cls"] == {"max_epochs": 3, "image_size": 64, "dataset_dir": "cls_data"}
