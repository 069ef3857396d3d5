"""benchmarks/foundation_levers.py: the one table of every pretraining lever, paired by seed across studies."""

from __future__ import annotations

import csv

import pytest

from benchmarks.foundation_levers import LEVERS, Lever, levers_table, paired_points

COLUMNS = ["name", "label_ratio", "seed", "dice", "accuracy"]


def _write_study(folder, task, runs):
    """runs: {(name, seed): value}; the value goes in both metric columns, at label ratio 0.1 (and a 1.0 row that
    the table must ignore)."""
    (folder / task).mkdir(parents=True, exist_ok=True)
    with open(folder / task / "label_efficiency.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for (name, seed), v in runs.items():
            w.writerow({"name": name, "label_ratio": 0.1, "seed": seed, "dice": v, "accuracy": v})
            w.writerow({"name": name, "label_ratio": 1.0, "seed": seed, "dice": 9.0, "accuracy": 9.0})


def test_differences_pair_seeds_across_studies(tmp_path):
    """The pretrained arms of one study against the controls of another, seed by seed, in points."""
    _write_study(tmp_path / "a", "busi_seg", {("openus", 0): 0.50, ("openus", 1): 0.40, ("openus", 2): 0.30,
                                              ("random", 0): 0.99})   # a's own control is not the one asked for
    _write_study(tmp_path / "b", "busi_seg", {("random", 0): 0.45, ("random", 1): 0.30, ("random", 2): 0.35})
    lever = Lever("x", "a", "b")
    assert paired_points(tmp_path, lever, "busi_seg", "openus") == pytest.approx([5.0, 10.0, -5.0])
    assert paired_points(tmp_path, lever, "busi_seg", "openus_frozen") == []   # arm not run
    assert paired_points(tmp_path, lever, "ddti_seg", "openus") == []          # task not run


def test_table_rows_only_for_committed_studies(tmp_path):
    shipped = LEVERS[0]
    _write_study(tmp_path / shipped.study, "busi_cls", {("openus", 0): 0.60, ("openus", 1): 0.40,
                                                        ("random", 0): 0.50, ("random", 1): 0.50})
    table = levers_table(tmp_path).splitlines()
    assert len(table) == 3   # header, rule, the one lever whose folder exists
    cells = [c.strip() for c in table[2].split("|")[1:-1]]
    assert cells[0] == shipped.label
    assert cells[3] == "+0.0 ± 14.1" and cells[1] == "-" and cells[4] == "-"   # BUSI cls fine-tuned: +10 and -10
