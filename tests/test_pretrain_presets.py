"""The pretraining presets merge onto train.json and build; their anti-collapse settings stay in place."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "openus_pretrain" / "configs"


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_preset_builds_and_keeps_collapse_guards(preset):
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / f"{preset}.json")])
    net = parser.get_parsed_content("network")
    assert net.ibot_loss.center_momentum == 0.9  # DINO / iBOT; 0.99 let one prototype take every image
    assert parser["teacher_temp"] <= 0.02 and parser["freeze_last_layer_epochs"] >= 1
    size = parser["global_size"]
    assert size % parser["mask_cell"] == 0 and parser["local_size"] % parser["mask_cell"] == 0
    with torch.no_grad():
        cls, patch, scores = net.teacher(torch.rand(2, parser["in_channels"], size, size))
    tokens = (size // 32) ** 2
    assert cls.shape == (2, parser["out_dim"]) and patch.shape == (2, tokens, parser["out_dim"]) and scores.shape == (2, tokens)
