"""Encoder factory and optimizer parameter groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from openus_monai.networks import build_encoder, encoder_layer_id, param_groups, set_trainable


def test_build_encoder_from_preset_config_and_checkpoint(tmp_path):
    enc = build_encoder({"depths": [1, 1, 1, 1], "dims": 8}, in_channels=1)
    assert enc.in_channels == 1 and enc.depths == (1, 1, 1, 1)
    torch.save(enc.state_dict(), tmp_path / "enc.pt")
    again = build_encoder({"depths": [1, 1, 1, 1], "dims": 8}, in_channels=1, pretrained=tmp_path / "enc.pt")
    for k, v in enc.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    with pytest.raises(ValueError, match="unknown encoder 'vmamba_huge'"):
        build_encoder("vmamba_huge")


def test_layer_ids_follow_depth():
    depths = (1, 1, 2, 1)
    assert encoder_layer_id("patch_embed.0.weight", depths) == 0
    assert encoder_layer_id("layers.0.blocks.0.norm.weight", depths) == 1
    assert encoder_layer_id("layers.2.blocks.1.op.Ds", depths) == 4
    assert encoder_layer_id("layers.3.blocks.0.mlp.fc1.weight", depths) == 5
    assert encoder_layer_id("outnorm3.weight", depths) == 5


def test_param_groups_decay_and_layerwise_lr():
    enc = build_encoder({"depths": [1, 1, 1, 1], "dims": 8})
    model = nn.Module()
    model.encoder, model.head = enc, nn.Linear(64, 2)
    groups = param_groups(model, weight_decay=0.05, lr=1.0, encoder=enc, layer_decay=0.5)
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(model.head.weight)]["lr"] == 1.0 and by_param[id(model.head.weight)]["weight_decay"] == 0.05
    assert by_param[id(model.head.bias)]["weight_decay"] == 0.0
    for name in ("A_logs", "Ds", "dt_projs_bias"):
        assert by_param[id(getattr(enc.layers[0].blocks[0].op, name))]["weight_decay"] == 0.0
    assert by_param[id(enc.patch_embed[0].weight)]["lr"] == pytest.approx(0.5**5)
    set_trainable(enc, False)
    frozen = param_groups(model, weight_decay=0.05, lr=1.0, encoder=enc)
    assert sum(len(g["params"]) for g in frozen) == 2
