"""Against the original OpenUS backbone (`../shared/reference`): keys, shapes and numbers."""

from __future__ import annotations

import json

import pytest
import torch

from openus_monai.networks import VMamba, load_openus_checkpoint, vmamba_small

from _helpers import REFERENCE

VECTORS = REFERENCE / "openus_vmamba_tiny_vectors.pt"
KEYS = REFERENCE / "openus_vmamba_small_keys.json"
NOT_ENCODER = ("decoder.", "decoder2.", "ema_", "masked_embed")


def minmax(x: torch.Tensor) -> torch.Tensor:
    lo, hi = x.min(1, keepdim=True).values, x.max(1, keepdim=True).values
    return (x - lo) / (hi - lo)


@pytest.fixture(scope="module")
def reference():
    if not VECTORS.is_file():
        pytest.skip(f"reference vectors not found at {VECTORS} (../shared is not beside this checkout)")
    ref = torch.load(VECTORS, weights_only=True)
    cfg = ref["config"]
    enc = VMamba(depths=cfg["depths"], dims=cfg["dims"], drop_path_rate=cfg["drop_path_rate"]).eval()
    report = load_openus_checkpoint(enc, ref["state_dict"])
    return ref, enc, report


def test_loader_maps_every_encoder_key(reference):
    ref, enc, report = reference
    assert report.missing_keys == []
    assert sorted(report.unexpected_keys) == sorted(k for k in ref["state_dict"] if k.startswith(("decoder", "ema_")))
    for name, value in enc.state_dict().items():
        assert torch.equal(value, ref["state_dict"][name]), name


def test_stage_outputs_and_tokens(reference):
    ref, enc, _ = reference
    with torch.no_grad():
        maps = enc(ref["input"])
        tokens = enc.forward_tokens(ref["input"])
    for i, (ours, theirs) in enumerate(zip(maps, ref["stage_outputs"])):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4, msg=f"stage {i}")
    torch.testing.assert_close(tokens, ref["tokens"], rtol=0, atol=1e-4)


def test_full_attention_map(reference):
    ref, enc, _ = reference
    with torch.no_grad():
        torch.testing.assert_close(enc.attention_map(ref["input"]), ref["attn_map"], rtol=0, atol=1e-4)


def test_linear_time_scores_match_map_column_means(reference):
    ref, enc, _ = reference
    with torch.no_grad():
        _, scores = enc(ref["input"], return_attention=True)
    torch.testing.assert_close(minmax(scores), minmax(ref["attn_map"].mean(1)), rtol=0, atol=1e-4)


def test_masked_tokens(reference):
    ref, enc, _ = reference
    enc.train()  # as stored: train mode, no dropout or drop path active
    try:
        with torch.no_grad():
            tokens = enc.forward_tokens(ref["input"], mask=ref["mask"])
    finally:
        enc.eval()
    torch.testing.assert_close(tokens, ref["tokens_masked"], rtol=0, atol=1e-4)
    assert not torch.allclose(tokens, ref["tokens"], atol=1e-3)


def test_small_key_list_maps_onto_vmamba_small():
    if not KEYS.is_file():
        pytest.skip(f"key list not found at {KEYS}")
    spec = json.loads(KEYS.read_text())
    shapes = spec["state_dict"]
    model = vmamba_small().state_dict()
    encoder_keys = {k for k in shapes if not k.startswith(NOT_ENCODER)}
    assert encoder_keys == set(model) - {"masked_embed"}
    for name in encoder_keys:
        assert list(model[name].shape) == shapes[name], name
    assert sum(torch.Size(shapes[k]).numel() for k in encoder_keys) == 49_380_096
    assert list(model["masked_embed"].shape) == shapes["masked_embed"]
    # A checkpoint with exactly these shapes (zeros) loads, dropping the decoders.
    fake = {"teacher": {f"module.backbone.{k}": torch.zeros(v) for k, v in shapes.items()}}
    report = load_openus_checkpoint(vmamba_small(), fake)
    assert report.missing_keys == []
    assert {k.split(".")[0] for k in report.unexpected_keys} == {"decoder", "decoder2", "ema_initialized"}
