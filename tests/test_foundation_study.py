"""The foundation study: arms with their own options reach the bundle (a frozen arm keeps its encoder, baseline
arms build MONAI's BasicUNet / DenseNet121), the table's mean / std / paired difference, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from openus_monai.io import atomic_torch_save
from openus_monai.networks import VMamba
from openus_monai.networks.record import encoder_file
from openus_monai.studies.foundation import TASKS, markdown_table, read_study_csv, run_foundation_study, study_arms
from openus_monai.studies.label_efficiency import normalize_arms, run_label_efficiency

from _helpers import demo_dataset, scratch_outputs

REPO = Path(__file__).resolve().parents[1]
SEG, CLS = REPO / "bundles" / "openus_seg", REPO / "bundles" / "openus_cls"


def _encoder_file(path: Path) -> Path:
    torch.manual_seed(0)
    encoder = VMamba(depths=[1, 1, 1, 1], dims=[8, 16, 32, 64], in_channels=1)
    return atomic_torch_save(encoder_file(encoder, {"method": "openus", "image_size": 32}), path)


def test_table_mean_std_and_paired_difference(tmp_path):
    """A hand-made CSV: means, sample standard deviations, the paired differences and a short cell (n=2)."""
    csv_file = tmp_path / "study.csv"
    lines = ["name,pretrained,init,config,label_ratio,seed,dice,wall_s,run_dir"]
    values = {"openus": [0.5, 0.6, 0.7], "random": [0.4, 0.4, 0.5], "basicunet": [0.3, 0.5]}
    for name, vs in values.items():
        lines += [f"{name},,,,0.1,{seed},{v},1.0,x" for seed, v in enumerate(vs)]
    lines += ["openus,,,,1.0,0,0.9,1.0,x", "random,,,,1.0,0,0.8,1.0,x"]
    csv_file.write_text("\n".join(lines) + "\n")
    table = markdown_table(read_study_csv(csv_file), "dice")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table.splitlines()[2:]}
    assert list(rows) == ["openus", "random", "basicunet", "**openus - random**"]
    assert rows["openus"][0] == "0.600 ± 0.100"
    assert rows["random"][0] == f"0.433 ± {math.sqrt(((0.4 - 0.4333) ** 2) * 2 + (0.5 - 0.4333) ** 2) / math.sqrt(2):.3f}"
    assert rows["basicunet"] == [f"0.400 ± {math.sqrt(0.02):.3f} (n=2)", "-"]
    # paired (same seed): 0.1, 0.2, 0.2
    assert rows["**openus - random**"] == [f"+0.167 ± {math.sqrt(((0.1 - 1 / 6) ** 2 + 2 * (0.2 - 1 / 6) ** 2) / 2):.3f}", "+0.100 (n=1)"]  # one seed: no spread
    assert table.splitlines()[0] == "| arm (dice) | 0.1 of the labels | 1 of the labels |"


def _sources(root: Path) -> Path:
    for task in TASKS.values():
        (root / task.source).mkdir(parents=True, exist_ok=True)
        (root / task.source / "datalist.json").write_text(json.dumps({"pretraining": [], "training": [], "test": []}))
    return root


def test_study_arms_options_and_resume(tmp_path):
    """Every arm's options reach its runs; the ablation runs only at its ratio; a second call reuses every run."""
    weights, ablation = _encoder_file(tmp_path / "w.pt"), _encoder_file(tmp_path / "abl.pt")
    calls: list = []

    def runner(run, train_cfgs, eval_cfgs, overrides):
        calls.append((run, train_cfgs, overrides))
        score = {"openus": 0.7, "openus_frozen": 0.6, "random": 0.5, "random_frozen": 0.45, "ablation": 0.55}.get(run.name, 0.4) + 0.01 * run.seed
        Path(overrides["output_dir"]).mkdir(parents=True)
        (Path(overrides["output_dir"]) / "metrics.json").write_text(json.dumps({"dice": score, "accuracy": score, "n_images": 3}))

    sources = _sources(tmp_path / "sources")
    kwargs = dict(tasks=["busi_seg", "busi_cls"], ratios=[0.1, 0.25], seeds=[0, 1], max_epochs=3, image_size=48,
                  ablation=ablation)
    result = run_foundation_study(weights, tmp_path / "study", sources, runner=runner, **kwargs)
    # 2 tasks x (5 arms x 2 ratios + ablation x 1 ratio) x 2 seeds
    assert len(calls) == 2 * (5 * 2 + 1) * 2
    for run, train_cfgs, o in calls:
        cls = "openus_cls" in train_cfgs[0]
        assert o["max_epochs"] == 3 and o["num_threads"] == 1 and o["dataset_dir"] == str((sources / "busi").resolve())
        assert o["image_size"] == (48 if cls else [48, 48])
        assert o.get("freeze_encoder", False) is (run.name in ("openus_frozen", "random_frozen"))
        assert (o["pretrained"], o["init"]) == {
            "openus": (str(weights), "pretrained"), "openus_frozen": (str(weights), "pretrained"),
            "random": (str(weights), "random"), "random_frozen": (str(weights), "random"), "ablation": (str(ablation), "pretrained"),
        }.get(run.name, (None, "pretrained"))
        baseline = "densenet121" if cls else "basicunet"
        assert (run.name == baseline) == train_cfgs[-1].endswith(f"configs/baselines/{baseline}.json")
        if run.name == "ablation":
            assert run.label_ratio == 0.1
    table = Path(result["tasks"]["busi_seg"]["table"]).read_text()
    assert "| basicunet | 0.405 ± 0.007 | 0.405 ± 0.007 |" in table
    assert "| **openus - random** | +0.200 ± 0.000 | +0.200 ± 0.000 |" in table
    assert "| **ablation - random** | +0.050 ± 0.000 | - |" in table
    assert "| **openus_frozen - random_frozen** | +0.150 ± 0.000 | +0.150 ± 0.000 |" in table  # its own control
    assert "| densenet121 |" in Path(result["tasks"]["busi_cls"]["table"]).read_text()
    combined = Path(result["results"]).read_text()
    assert "### busi_seg" in combined and "### busi_cls" in combined and "busi_cls/label_efficiency.png" in combined

    def must_not_run(*args):
        raise AssertionError("resume must reuse finished runs")

    run_foundation_study(weights, tmp_path / "study", sources, runner=must_not_run, **kwargs)
    with pytest.raises(ValueError, match="ablation"):
        study_arms(TASKS["busi_seg"], weights, arms=["openus", "ablation"])
    with pytest.raises(ValueError, match="unknown tasks"):
        run_foundation_study(weights, tmp_path / "s", sources, tasks=["busi"], runner=runner)


def test_arm_mapping_forms(tmp_path):
    weights = _encoder_file(tmp_path / "w.pt")
    arms = normalize_arms({"frozen": {"pretrained": str(weights), "freeze_encoder": True}, "openus": str(weights),
                           "unet": {"config_file": "configs/baselines/basicunet.json"}, "abl": {"pretrained": str(weights), "ratios": 0.1}})
    assert arms["frozen"].overrides == {"freeze_encoder": True} and arms["frozen"].pretrained == str(weights)
    assert arms["unet"].config_files == ("configs/baselines/basicunet.json",) and arms["unet"].pretrained is None
    assert arms["abl"].ratios == (0.1,) and arms["openus"].overrides == {}
    (one,) = normalize_arms({"pretrained": str(weights), "freeze_encoder": True}).values()  # one arm, not {name: arm}
    assert one.overrides == {"freeze_encoder": True}
    with pytest.raises(ValueError, match="ratios"):
        normalize_arms({"x": {"pretrained": str(weights), "ratios": [0.0]}})


def test_baseline_configs_build_monai_networks_and_refuse_pretrained(tmp_path):
    from monai.bundle import ConfigParser
    from monai.networks.nets import BasicUNet, DenseNet121

    data = str(demo_dataset(tmp_path / "demo", n=24, size=64))
    weights = _encoder_file(tmp_path / "w.pt")
    for bundle, config, net_class in ((SEG, "basicunet", BasicUNet), (CLS, "densenet121", DenseNet121)):
        for files in (["train.json"], ["train.json", "evaluate.json"]):
            paths = [bundle / "configs" / f for f in files[:1]] + [bundle / "configs" / "baselines" / f"{config}.json"]
            paths += [bundle / "configs" / f for f in files[1:]]
            for pretrained, error in (("", None), (str(weights), "pretrained"), ("", "freeze_encoder")):
                parser = ConfigParser()
                parser.read_config([str(p) for p in paths])
                parser.update(scratch_outputs({"dataset_dir": data, "pretrained": pretrained, "freeze_encoder": error == "freeze_encoder",
                                               "bundle_root": str(bundle)}))
                if bundle == CLS and "evaluate.json" in files:  # evaluation reads the class names from model.pt
                    parser["class_names"] = ["benign", "malignant", "normal"]
                if error:
                    with pytest.raises(RuntimeError) as info:
                        parser.get_parsed_content("network_def")
                    cause = info.value
                    while cause.__cause__ is not None:
                        cause = cause.__cause__
                    assert isinstance(cause, ValueError) and error in str(cause) and "baseline" in str(cause)
                else:
                    net = parser.get_parsed_content("network_def")
                    assert isinstance(net, net_class)
                    assert parser.get_parsed_content("network_record").target == f"monai.networks.nets.{net_class.__name__}"


def test_frozen_and_baseline_arms_train_through_the_bundle(tmp_path):
    """Real tiny runs (in process): the frozen arm's encoder equals the file's after training; the BasicUNet arm
    trains and evaluates through the same configs."""
    data = str(demo_dataset(tmp_path / "demo", n=16, size=32))
    weights = _encoder_file(tmp_path / "w.pt")
    result = run_label_efficiency(
        SEG, tmp_path / "study", ratios=[1.0], seeds=[0], in_process=True, config_files=["configs/tiny.json"],
        pretrained={"frozen": {"pretrained": str(weights), "freeze_encoder": True},
                    "basicunet": {"config_file": "configs/baselines/basicunet.json"}},
        overrides={"dataset_dir": data, "max_epochs": 1, "image_size": [32, 32], "max_train_images": None, "save_masks": False},
        metrics=["dice"],
    )
    rows = {r["name"]: r for r in result["rows"]}
    frozen = torch.load(Path(rows["frozen"]["run_dir"]) / "models" / "seg_checkpoint_epoch=1.pt", weights_only=True)["network"]
    initial = torch.load(weights, weights_only=True)["state_dict"]
    encoder = {k.removeprefix("encoder."): v for k, v in frozen.items() if k.startswith("encoder.")}
    assert encoder.keys() == initial.keys()
    assert all(torch.equal(encoder[k], initial[k]) for k in initial), "a frozen encoder changed in training"
    unet = torch.load(Path(rows["basicunet"]["run_dir"]) / "models" / "model.pt", weights_only=True)
    assert unet["network_config"]["_target_"] == "monai.networks.nets.BasicUNet"
    assert rows["basicunet"]["config"] == "basicunet.json" and 0.0 <= rows["basicunet"]["dice"] <= 1.0


def test_prepared_datalist_keeps_its_test_list(tmp_path):
    """A ``prepare`` datalist: the test images are exactly its ``test`` list (held out of pretraining), the label
    subset comes from its ``training`` list, its ``validation`` list stays whole."""
    from openus_monai.data import build_datalist

    def entries(split, n):
        return [{"image": f"cache/{split}_{i}.png", "mask": f"cache/{split}_{i}_mask.png", "label": "ab"[i % 2]} for i in range(n)]

    lists = {"training": entries("tr", 20), "validation": entries("va", 5), "test": entries("te", 7)}
    (tmp_path / "datalist.json").write_text(json.dumps({"pretraining": [{"image": e["image"]} for e in lists["training"]], **lists}))
    for task in ("segmentation", "classification"):
        dl = build_datalist(tmp_path, task, label_ratio=0.25, seed=1, check_exists=False)
        assert [e["image"] for e in dl["test"]] == [str(tmp_path / e["image"]) for e in lists["test"]]
        assert [e["image"] for e in dl["validation"]] == [str(tmp_path / e["image"]) for e in lists["validation"]]
        # a quarter of each class's 10 entries, rounded up (the subset is class-stratified)
        assert len(dl["training"]) == 6 and {e["image"] for e in dl["training"]} <= {str(tmp_path / e["image"]) for e in lists["training"]}
        key = "mask" if task == "segmentation" else "label"
        assert dl["test"][0]["label"] == (str(tmp_path / lists["test"][0][key]) if key == "mask" else lists["test"][0][key])


def test_cli_command_registered():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "openus_monai", "foundation-study", "--help"], cwd=REPO, capture_output=True,
                         text=True, env={"PAGER": "cat", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert out.returncode == 0 and "--ablation" in out.stdout + out.stderr and "--val_interval" in out.stdout + out.stderr


def test_merge_joins_studies_run_apart(tmp_path):
    """Two studies, one label ratio each (one with three seeds, one with one), join into one table per task through
    the CLI: every run once, cells over fewer seeds marked; a run present in both studies is refused."""
    import subprocess
    import sys

    from openus_monai.studies.foundation import merge_foundation_studies

    weights = _encoder_file(tmp_path / "w.pt")

    def runner(run, train_cfgs, eval_cfgs, overrides):
        score = {"openus": 0.7, "random": 0.5}.get(run.name, 0.4) + run.label_ratio / 10 + 0.01 * run.seed
        Path(overrides["output_dir"]).mkdir(parents=True)
        (Path(overrides["output_dir"]) / "metrics.json").write_text(json.dumps({"dice": score, "accuracy": score, "n_images": 3}))

    sources = _sources(tmp_path / "sources")
    arms = ["openus", "random", "baseline"]
    run_foundation_study(weights, tmp_path / "r01", sources, tasks=["busi_seg", "busi_cls"], arms=arms, ratios=[0.1],
                         seeds=[0, 1, 2], runner=runner)
    run_foundation_study(weights, tmp_path / "r1", sources, tasks=["busi_seg"], arms=arms, ratios=[1.0], seeds=[0], runner=runner)
    out = subprocess.run([sys.executable, "-m", "openus_monai", "foundation-merge", str(tmp_path / "r01"), str(tmp_path / "r1"),
                          "--output_dir", str(tmp_path / "merged")], cwd=REPO, capture_output=True, text=True,
                         env={"PAGER": "cat", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    seg = read_study_csv(tmp_path / "merged" / "busi_seg" / "label_efficiency.csv")
    assert sorted((r["name"], r["label_ratio"], r["seed"]) for r in seg) == sorted(
        [(a, 0.1, s) for a in ("openus", "random", "basicunet") for s in (0, 1, 2)] + [(a, 1.0, 0) for a in ("openus", "random", "basicunet")])
    assert ",0.1,0," in (tmp_path / "merged" / "busi_seg" / "label_efficiency.csv").read_text()  # seeds stay integers
    table = (tmp_path / "merged" / "busi_seg" / "table.md").read_text()
    assert "| arm (dice) | 0.1 of the labels | 1 of the labels |" in table
    assert "| openus | 0.720 ± 0.010 | 0.800 (n=1) |" in table and "| **openus - random** | +0.200 ± 0.000 | +0.200 (n=1) |" in table
    assert (tmp_path / "merged" / "busi_seg" / "label_efficiency.png").stat().st_size > 0
    assert "| 0.1 of the labels |" in (tmp_path / "merged" / "busi_cls" / "table.md").read_text()  # a task of one study only
    assert "## Label efficiency: `w.pt`" in out.stdout and "### busi_seg" in out.stdout and "### busi_cls" in out.stdout
    with pytest.raises(ValueError, match=r"\('openus', 0.1, 0\).* is in both"):
        merge_foundation_studies([tmp_path / "r01", tmp_path / "r01"], tmp_path / "again")
    with pytest.raises(ValueError, match="one of the studies"):
        merge_foundation_studies([tmp_path / "r01"], tmp_path / "r01")
    with pytest.raises(ValueError, match="not a foundation study"):
        merge_foundation_studies([tmp_path / "sources"], tmp_path / "x")
