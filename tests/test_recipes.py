"""USF-MAE and USFM recipes: ViT encoders, MAE masking and loss, USFM band-stop and noise branches, self-describing
encoder files, and each recipe end to end through ``python -m monai.bundle run`` on the demo data."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn as nn

from openus_monai.losses import masked_patch_loss, normalise_patches, spectrum_loss
from openus_monai.methods import MAEMethod, USFMMethod
from openus_monai.networks import (
    ViTEncoder,
    build_encoder,
    build_vit,
    encoder_file,
    load_encoder_file,
    load_openus_checkpoint,
    vit_base,
    vit_small,
    vit_tiny,
)
from openus_monai.transforms import band_stop, masked_count, patchify, radial_frequency, random_patch_mask, unpatchify

from _helpers import REPO, demo_dataset
from test_bundle_pretrain import BUNDLE, run_cli

TINY_VIT = {"hidden_size": 32, "num_layers": 2, "num_heads": 2}


def tiny_vit(**kwargs) -> ViTEncoder:
    return build_vit(TINY_VIT, img_size=64, **kwargs)


# ---- ViT encoders ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("preset", "width", "heads"), [(vit_tiny, 192, 3), (vit_small, 384, 6), (vit_base, 768, 12)])
def test_vit_presets(preset, width, heads):
    enc = preset()
    assert (enc.embed_dim, enc.num_layers, enc.patch_size, enc.in_channels) == (width, 12, 16, 1)
    assert enc.vit.blocks[0].attn.num_heads == heads
    assert enc.out_indices == (2, 5, 8, 11)


def test_vit_any_size_divisible_by_the_patch():
    enc = tiny_vit().eval()
    for size in [(64, 64), (48, 96)]:
        feats = enc(torch.randn(2, 1, *size))
        length = size[0] // 16 * size[1] // 16
        assert feats.tokens.shape == (2, length, 32) and feats.pooled.shape == (2, 32) and feats.grid == (size[0] // 16, size[1] // 16)
        assert [h.shape for h in feats.hidden_states] == [(2, length, 32)] * 2
        assert enc.feature_map(feats.tokens, feats.grid).shape == (2, 32, *feats.grid)
    # the rebuilt sin-cos embedding of the native grid is the stored one: other sizes use the same formula
    stored = enc.vit.patch_embedding.position_embeddings
    from monai.networks.blocks.pos_embed_utils import build_sincos_position_embedding

    torch.testing.assert_close(build_sincos_position_embedding([4, 4], 32, 2), stored)
    with pytest.raises(ValueError, match="divisible"):
        enc(torch.randn(1, 1, 64, 72))


# ---- MAE ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "ratio"), [(16, 0.75), (196, 0.75), (64, 0.6), (49, 0.75)])
def test_mae_masked_share_equals_the_ratio(length, ratio):
    torch.manual_seed(0)
    mask, keep = random_patch_mask(8, length, ratio)
    n_masked = masked_count(length, ratio)
    assert n_masked == round(ratio * length)
    if float(ratio * length).is_integer():  # exactly the ratio, and MAE's own rule L - int(L * (1 - r)) agrees
        assert n_masked / length == ratio and n_masked == length - int(length * (1 - ratio))
    assert (mask.sum(1) == n_masked).all()
    assert keep.shape == (8, length - n_masked)
    assert not mask.gather(1, keep).any() and (keep.diff(dim=1) > 0).all()  # the kept are exactly the unmasked
    assert len({tuple(row.tolist()) for row in mask}) > 1  # drawn per image


def _shift_visible(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
    """Forward hook on the MAE network: add 50 to the predictions of the visible patches (``args[1]``: their indices)."""
    index = args[1][..., None].expand(-1, -1, out.shape[-1])
    return out.scatter_add(1, index, torch.full(index.shape, 50.0))


def test_mae_loss_sees_only_masked_patches():
    torch.manual_seed(0)
    prediction, target = torch.randn(2, 16, 12), torch.rand(2, 16, 12)
    mask, _ = random_patch_mask(2, 16, 0.75)
    for normalise in (True, False):
        loss = masked_patch_loss(prediction, target, mask, normalise)
        assert torch.equal(masked_patch_loss(torch.where(mask[..., None], prediction, prediction + 100.0), target, mask, normalise), loss)
        assert masked_patch_loss(torch.where(mask[..., None], prediction + 1.0, prediction), target, mask, normalise) != loss

    # and through the method: adding anything to the visible patches' predictions leaves the loss as it was
    method = MAEMethod(tiny_vit(), decoder_size=16, decoder_layers=1, decoder_heads=2)
    images = torch.rand(2, 1, 64, 64)
    torch.manual_seed(3)
    reference = method({"image": images}, {})["loss"]
    handle = method.student.register_forward_hook(_shift_visible)
    torch.manual_seed(3)
    assert torch.equal(method({"image": images}, {})["loss"], reference)
    handle.remove()


def test_mae_constant_patch_target_is_zero():
    patches = torch.rand(2, 4, 16)
    patches[0, 1] = 0.7  # a constant patch
    target = normalise_patches(patches)
    assert torch.equal(target[0, 1], torch.zeros(16))
    assert target[0, 0].abs().sum() > 0
    images = torch.full((1, 1, 32, 32), 0.3)
    mask = torch.ones(1, 4, dtype=torch.bool)
    assert masked_patch_loss(torch.zeros(1, 4, 256), patchify(images, 16), mask, normalise=True) == 0
    assert masked_patch_loss(torch.zeros(1, 4, 256), patchify(images, 16), mask, normalise=False) > 0


def test_patchify_round_trip():
    images = torch.randn(2, 3, 32, 48)
    patches = patchify(images, 16)
    assert patches.shape == (2, 6, 768)
    assert torch.equal(patches[0, 1], images[0, :, :16, 16:32].permute(1, 2, 0).reshape(-1))
    assert torch.equal(unpatchify(patches, (2, 3), 3), images)


# ---- USFM --------------------------------------------------------------------------------------------------------


def _sinusoid(h: int, w: int, ky: int, kx: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.cos(2 * math.pi * (ky * y / h + kx * x / w))


def test_usfm_band_stop_removes_exactly_the_band():
    h = w = 64
    parts = [_sinusoid(h, w, 0, 4), _sinusoid(h, w, 12, 0), 0.5 * _sinusoid(h, w, 20, 20)]  # radii 0.0625, 0.1875, 0.44
    image = (1.0 + sum(parts)).float()[None, None]
    radius = radial_frequency((h, w))
    band = (radius >= 0.15) & (radius < 0.25)
    spectrum = torch.fft.fft2(image.double())[0, 0]
    assert spectrum[band].abs().max() > 100  # the band holds one of the sinusoids
    filtered, mask = band_stop(image, 0.15, 0.25)
    out = torch.fft.fft2(filtered.double())[0, 0]
    assert torch.equal(mask.bool(), ~band)
    assert out[band].abs().max() < 1e-3  # removed
    torch.testing.assert_close(out[~band], spectrum[~band], atol=1e-3, rtol=1e-5)  # the rest kept
    torch.testing.assert_close(filtered[0, 0].double(), 1.0 + parts[0] + parts[2], atol=1e-5, rtol=0)
    # one band per image
    batch = image.repeat(2, 1, 1, 1)
    filtered, mask = band_stop(batch, torch.tensor([0.15, 0.4]), torch.tensor([0.25, 0.5]))
    torch.testing.assert_close(filtered[1, 0].double(), 1.0 + parts[0] + parts[1], atol=1e-5, rtol=0)
    assert mask.shape == (2, 1, h, w)


class _Oracle(nn.Module):
    """A 'student' that returns given pixels (as patches) for the spatial and frequency halves."""

    def __init__(self, pixels: torch.Tensor) -> None:
        super().__init__()
        self.pixels = pixels

    def forward(self, inputs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return patchify(self.pixels, 16)


def test_usfm_noise_branch_target_is_the_clean_image():
    method = USFMMethod(tiny_vit(), mask_ratio=0.5, noise_std=0.2)
    torch.manual_seed(0)
    clean = torch.rand(4, 1, 64, 64)
    views = method.corrupt(clean)
    assert torch.equal(views["spatial_target"], clean) and torch.equal(views["frequency_target"], clean)
    assert abs(float((views["spatial_input"] - clean).std()) - 0.2) < 0.01  # the noise to remove
    assert (views["spatial_mask"].sum(1) == 8).all()
    assert not torch.allclose(views["frequency_input"], clean, atol=1e-3)

    # the model that gives back the clean image scores zero on every term; one that copies its noisy input does not
    method.wrap_student(_Oracle(torch.cat([clean, clean])))
    torch.manual_seed(1)
    perfect = method({"image": clean}, {})
    assert all(float(perfect[f"loss_{k}"]) < 1e-6 for k in ("spatial", "frequency_pixel", "frequency_band"))
    torch.manual_seed(1)
    views = method.corrupt(clean)
    method.wrap_student(_Oracle(torch.cat([views["spatial_input"], views["frequency_input"]])))
    torch.manual_seed(1)
    copied = method({"image": clean}, {})
    assert abs(float(copied["loss_spatial"]) - 0.04) < 0.005  # noise_std ** 2
    assert float(copied["loss_frequency_band"]) > 1e-3
    method.wrap_student(None)


def test_spectrum_loss_weights_pick_the_band():
    a, b = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    assert spectrum_loss(a, a) == 0 and spectrum_loss(a, b) > 0
    assert spectrum_loss(a, b, weight=torch.zeros(32, 32)) == 0


# ---- self-describing encoder files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: tiny_vit(), lambda: build_encoder({"depths": [1, 1, 1, 1], "dims": 16}, in_channels=1)])
def test_encoder_file_rebuilds_the_encoder_alone(make, tmp_path):
    encoder = make().eval()
    torch.save(encoder_file(encoder, {"method": "x", "image_size": 64}), tmp_path / "enc.pt")
    rebuilt, meta = load_encoder_file(tmp_path / "enc.pt")  # weights_only inside
    assert meta == {"method": "x", "image_size": 64} and type(rebuilt) is type(encoder)
    x = torch.rand(1, 1, 64, 64)
    first, second = encoder(x), rebuilt.eval()(x)
    first, second = (first.tokens, second.tokens) if isinstance(first, tuple) and hasattr(first, "tokens") else (first[-1], second[-1])
    torch.testing.assert_close(first, second)


# ---- each recipe end to end through the bundle ---------------------------------------------------------------------


RECIPE_RUNS = {
    "usf_mae": ["recipes/usf_mae.json", "recipes/tiny_vit.json"],
    "usfm": ["recipes/usfm.json", "recipes/tiny_vit.json"],
    "openus": ["recipes/openus.json"],
}


@pytest.fixture(scope="module")
def recipe_data(tmp_path_factory):
    return demo_dataset(tmp_path_factory.mktemp("recipe_data") / "demo", n=16)  # tiny.json's demo_images


@pytest.mark.parametrize("recipe", sorted(RECIPE_RUNS))
def test_recipe_pretrains_end_to_end_and_writes_a_self_describing_encoder(recipe, recipe_data, tmp_path):
    configs = [str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "tiny.json")] + [str(BUNDLE / "configs" / c) for c in RECIPE_RUNS[recipe]]
    proc = run_cli(
        ["run", "training", "--config_file", str(configs), "--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval"),
         "--dataset_dir", str(recipe_data), "--max_epochs", "1" if recipe == "openus" else "2"],
        cwd=BUNDLE,
    )
    losses = [float(x) for x in re.findall(r"train_loss: ([0-9.]+)", proc.stdout + proc.stderr)]
    assert len(losses) == (4 if recipe == "openus" else 8) and all(math.isfinite(v) for v in losses)
    content = torch.load(tmp_path / "models" / "backbone.pt", map_location="cpu", weights_only=True)
    assert set(content) == {"state_dict", "network_config", "meta"} and content["meta"]["method"] == recipe
    encoder, meta = load_encoder_file(tmp_path / "models" / "backbone.pt")  # from the file alone
    assert meta["image_size"] == (96 if recipe == "openus" else 64)
    final = torch.load(tmp_path / "models" / "pretrain_final.pt", map_location="cpu", weights_only=True)
    prefix = final["encoder_config"]["prefix"]
    for name, value in encoder.state_dict().items():  # the trained weights of the exported encoder
        assert torch.equal(value, final["network"][prefix + name]), name
    if recipe == "openus":
        assert prefix == "teacher.encoder." and type(encoder).__name__ == "VMamba"
        load_openus_checkpoint(build_encoder({"depths": [1, 1, 1, 1], "dims": 16}, in_channels=1), tmp_path / "models" / "backbone.pt", strict=True)
    else:
        assert prefix == "student.encoder." and isinstance(encoder, ViTEncoder)
        assert encoder(torch.rand(1, 1, 64, 64)).tokens.shape == (1, 16, 32)
    if recipe == "usf_mae":  # export-backbone writes the same file from the checkpoint
        run_cli(["export-backbone", str(tmp_path / "models" / "pretrain_final.pt"), str(tmp_path / "enc.pt")], cwd=REPO, module=("-m", "openus_monai"))
        exported = torch.load(tmp_path / "enc.pt", weights_only=True)
        assert exported["network_config"] == content["network_config"] and exported["meta"] == content["meta"]
        assert all(torch.equal(exported["state_dict"][k], v) for k, v in content["state_dict"].items())


# ---- UNETR-style decoder -----------------------------------------------------------------------------------------


def test_vit_unetr_maps_images_to_full_resolution_logits():
    from openus_monai.networks.vit_decoder import ViTUNETR

    encoder = build_vit({"hidden_size": 32, "num_layers": 4, "num_heads": 2}, img_size=64)
    net = ViTUNETR(encoder, out_channels=3, feature_size=8)
    images = torch.rand(2, 1, 64, 96, requires_grad=True)
    logits = net(images)
    assert logits.shape == (2, 3, 64, 96)
    logits[:, :, :16, :16].sum().backward()  # every hidden state reaches the output
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in encoder.named_parameters() if "blocks.0." in n and p.requires_grad)
    # MONAI's blocks build cross-attention norms they never use: frozen, so DDP need not search for unused parameters
    assert not any(p.requires_grad for n, p in net.named_parameters() if "cross_attn" in n)
    with pytest.raises(ValueError, match="4 out_indices"):
        ViTUNETR(build_vit(TINY_VIT, img_size=64))
