"""The command line reads options as users type them (issue 12, found while building the real corpus).

- ``--exclude busi,ddti`` (Fire passes one string) and lists work for ``corpus`` and ``dedup``; a wrong name
  fails before anything is prepared or hashed, naming the dataset folders that exist.
- ``--progress false`` (Fire passes the string ``"false"``) turns bars off; other words are refused; bars are
  drawn only for a terminal (:func:`openus_monai.terminal.show_progress`), whatever the command.
- A prepared datalist of a video data set without ``--cache`` lists frames the bundles cannot read: one error
  that names ``--cache``.
"""

from __future__ import annotations

import json
from pathlib import Path

import fire
import numpy as np
import pytest
from PIL import Image

from openus_monai.__main__ import OpenUSCLI
from openus_monai.options import as_flag, as_names
from openus_monai.terminal import PROGRESS_ENV, progress_bar


def cli(*args: str):
    """``python -m openus_monai ARGS``, in-process (Fire parses ARGS as it does from a shell)."""
    return fire.Fire(OpenUSCLI, command=[str(a) for a in args], name="openus_monai")


def _images(folder: Path, n: int, seed: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(folder / f"{folder.name}{i}.png")


def test_flags_and_names():
    assert [as_flag(v) for v in ("false", "False", " OFF ", "no", "0", 0, False, None, "", "none")] == [False] * 10
    assert [as_flag(v) for v in ("true", "Yes", "on", "1", 1, True)] == [True] * 6
    for bad in ("flase", "2", 2, "maybe"):
        with pytest.raises(ValueError, match="--progress must be true or false"):
            as_flag(bad, "--progress")
    assert as_names("busi, ddti,,usgra-seg") == ["busi", "ddti", "usgra-seg"]
    assert as_names(("busi,ddti", "x")) == as_names(["busi", "ddti", "x"]) == ["busi", "ddti", "x"]
    assert as_names(None) == as_names("") == []


def test_progress_bars_only_on_a_terminal_and_when_asked(monkeypatch, capsys):
    items = [1, 2, 3]
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    assert progress_bar(items, "x") is items  # pytest's stderr is not a terminal: no bar
    monkeypatch.setenv(PROGRESS_ENV, "1")
    assert list(progress_bar(items, "x")) == items and "0/3" in capsys.readouterr().err
    assert progress_bar(items, "x", enabled=False) is items  # --progress false wins
    monkeypatch.setenv(PROGRESS_ENV, "sometimes")
    with pytest.raises(ValueError, match=PROGRESS_ENV):
        progress_bar(items, "x")


def test_prepare_progress_false_and_bad_words(tmp_path, monkeypatch, capsys):
    _images(tmp_path / "set", 3, 0)
    monkeypatch.setenv(PROGRESS_ENV, "1")  # bars forced on, as on a terminal
    cli("prepare", tmp_path / "set", tmp_path / "bars")
    assert "scan" in capsys.readouterr().err
    cli("prepare", tmp_path / "set", tmp_path / "quiet", "--progress", "false")
    assert "scan" not in capsys.readouterr().err
    assert len(json.loads((tmp_path / "quiet" / "datalist.json").read_text())["pretraining"]) == 3
    with pytest.raises(ValueError, match="--progress must be true or false.*'flase'"):
        cli("prepare", tmp_path / "set", tmp_path / "never", "--progress", "flase")
    assert not (tmp_path / "never").exists()


def test_corpus_exclude_comma_separated_and_checked_first(tmp_path):
    root = tmp_path / "downloads"
    for name, seed in (("seta", 1), ("setb", 2), ("setc", 3)):
        _images(root / name, 3, seed)
    with pytest.raises(FileNotFoundError, match=r"'sedb'.*seta, setb, setc"):
        cli("corpus", root, tmp_path / "bad", "--exclude", "seta,sedb", "--progress", "false")
    assert not (tmp_path / "bad").exists()  # nothing prepared
    cli("corpus", root, tmp_path / "corpus", "--exclude", "seta,setb", "--frame_stride", 1, "--progress", "false")
    assert sorted(p.name for p in (tmp_path / "corpus" / "tests").iterdir()) == ["seta_test.json", "setb_test.json"]
    cli("corpus", root, tmp_path / "corpus_list", "--exclude", "[seta,setb]", "--frame_stride", 1, "--progress", "no")
    assert len(list((tmp_path / "corpus_list" / "tests").iterdir())) == 2


def test_dedup_exclude_comma_separated_and_checked_first(tmp_path):
    _images(tmp_path / "train", 4, 0)
    _images(tmp_path / "test", 2, 0)  # the same pixels as train0, train1
    _images(tmp_path / "other", 2, 5)
    for name in ("train", "test", "other"):
        lst = "pretraining" if name == "train" else "test"
        entries = [{"image": str(p)} for p in sorted((tmp_path / name).iterdir())]
        (tmp_path / f"{name}.json").write_text(json.dumps({lst: entries if name != "other" else entries[:1]}))
    Image.open(tmp_path / "other" / "other0.png").save(tmp_path / "train" / "leak.png")
    train = json.loads((tmp_path / "train.json").read_text())
    train["pretraining"].append({"image": str(tmp_path / "train" / "leak.png")})
    (tmp_path / "train.json").write_text(json.dumps(train))
    with pytest.raises(FileNotFoundError, match="nope.json"):
        cli("dedup", tmp_path / "train.json", "--out", tmp_path / "bad", "--exclude", f"{tmp_path / 'test.json'},nope.json")
    assert not (tmp_path / "bad").exists()  # nothing hashed or written
    summary = cli("dedup", tmp_path / "train.json", "--out", tmp_path / "dd",
                  "--exclude", f"{tmp_path / 'test.json'},{tmp_path / 'other.json'}", "--progress", "off")
    assert summary["removed"] == {"train.json": 3}  # train0, train1 (test.json) and leak.png (other.json)


def test_prepared_video_without_cache_names_the_fix(tmp_path):
    from openus_monai.data import build_datalist

    clip = str(tmp_path / "clip.mp4")
    entries = [{"image": clip, "frame": k, "label": "a"} for k in (0, 5)]
    (tmp_path / "datalist.json").write_text(json.dumps({"pretraining": [{"image": clip, "frame": k} for k in (0, 5)],
                                                        "training": entries, "validation": [], "test": [],
                                                        "root": "/downloads/clips"}))
    for task in ("pretraining", "classification"):
        with pytest.raises(ValueError, match=r"2 frames of video.*--cache.*prepare --root /downloads/clips .* --cache"):
            build_datalist(tmp_path, task, check_exists=False)
    (tmp_path / "datalist.json").write_text(json.dumps({"pretraining": [{"image": clip}], "training": []}))
    assert build_datalist(tmp_path, "pretraining", check_exists=False)["training"] == [{"image": clip}]  # stills: as before
