"""MambaDecoder and OpenUSSegNet: shapes, protocols (frozen / layer-wise lr), pretrained encoder loading;
segmentation transforms: mask checks naming both files, grayscale, orientation, mask saving."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged
from PIL import Image

from openus_monai.data import image_readers
from openus_monai.networks import MambaDecoder, OpenUSSegNet, VMamba
from openus_monai.transforms import CheckSegPaird, EnsureGray2Dd, SaveSegMaskd, to_gray_2d

TINY = {"depths": [1, 1, 1, 1], "dims": 16}



def _net(**kwargs) -> OpenUSSegNet:
    torch.manual_seed(0)
    return OpenUSSegNet(TINY, in_channels=1, num_classes=2, decoder_depths=1, **kwargs)


# ----------------------------------------------------------------------------- networks
def test_decoder_shapes_and_checks():
    dims = (16, 32, 64, 128)
    feats = [torch.randn(2, c, 16 // 2**i, 24 // 2**i) for i, c in enumerate(dims)]  # a 64 x 96 input
    for depths in (1, [0, 1, 2]):
        dec = MambaDecoder(dims, num_classes=3, depths=depths)
        assert dec(feats).shape == (2, 3, 64, 96)
    assert len(MambaDecoder(dims, depths=[0, 1, 2]).stages[2]) == 2
    with pytest.raises(ValueError, match="4 feature maps"):
        dec(feats[:3])
    with pytest.raises(ValueError, match=r"feature map 1 must be \[B, 32"):
        dec([feats[0], feats[0], feats[2], feats[3]])


def test_segnet_one_tensor_in_out():
    net = _net().eval()
    with torch.no_grad():
        for shape in ((1, 1, 64, 64), (2, 1, 96, 128)):
            y = net(torch.randn(*shape))
            assert isinstance(y, torch.Tensor) and y.shape == (shape[0], 2, *shape[2:])
        # MONAI MetaTensors go in as plain tensors and come back with their metadata (Invertd needs it)
        x = MetaTensor(torch.randn(1, 1, 64, 64), meta={"filename_or_obj": "a.png"})
        y = net(x)
    assert isinstance(y, MetaTensor) and y.meta["filename_or_obj"] == "a.png" and y.shape == (1, 2, 64, 64)
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.randn(1, 1, 48, 64))


def test_frozen_encoder_protocol():
    net = _net(freeze_encoder=True, drop_path_rate=0.3)
    net.train()
    assert not net.encoder.training and net.decoder.training
    assert not any(p.requires_grad for p in net.encoder.parameters())
    net(torch.randn(2, 1, 64, 64)).mean().backward()
    assert all(p.grad is None for p in net.encoder.parameters())
    assert any(p.grad is not None for p in net.decoder.parameters())
    groups = net.param_groups(lr=1e-3, weight_decay=0.05)
    ids = {id(p) for g in groups for p in g["params"]}
    assert ids == {id(p) for p in net.decoder.parameters()}
    # `--freeze_encoder false` on the command line arrives as the string "false": not frozen
    assert _net(freeze_encoder="false").freeze_encoder is False and _net(freeze_encoder="true").freeze_encoder is True
    net.set_freeze_encoder(False).train()
    assert net.encoder.training and all(p.requires_grad for p in net.encoder.parameters())


def test_finetune_layerwise_lr():
    net = _net()
    groups = net.param_groups(lr=1e-3, weight_decay=0.05, encoder_lr_scale=0.1, layer_decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert len(lr_of) == sum(1 for _ in net.parameters())
    assert all(lr_of[id(p)] == pytest.approx(1e-3) for p in net.decoder.parameters())
    stem = net.encoder.patch_embed[0].weight
    last = net.encoder.layers[3].blocks[0].op.in_proj.weight
    assert lr_of[id(stem)] < lr_of[id(last)] < 1e-3 * 0.1 + 1e-12
    wd = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert wd[id(net.decoder.head.bias)] == 0 and wd[id(net.decoder.head.weight)] == 0.05
    opt = torch.optim.AdamW(groups)  # the groups are valid optimizer input
    assert len(opt.param_groups) == len(groups)


def _exported_encoder(path: Path) -> dict[str, torch.Tensor]:
    """An encoder as the pretraining bundle exports it: a plain state dict of the encoder's tensors."""
    torch.manual_seed(123)
    enc = VMamba(**TINY, in_channels=1)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p))  # far from any initialisation
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    torch.save(state, path)
    return state


def test_pretrained_encoder_loads_exactly(tmp_path):
    state = _exported_encoder(tmp_path / "encoder.pt")
    net = _net(pretrained=str(tmp_path / "encoder.pt"))
    loaded = net.encoder.state_dict()
    assert set(loaded) == set(state)
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    random_init = _net().encoder.state_dict()
    assert not torch.equal(random_init["patch_embed.0.weight"], state["patch_embed.0.weight"])
    with pytest.raises(ValueError, match="only when OpenUSSegNet builds the encoder"):
        OpenUSSegNet(VMamba(**TINY, in_channels=1), pretrained=str(tmp_path / "encoder.pt"))


def test_pretraining_checkpoint_export_loads_exactly(tmp_path):
    """A pretraining checkpoint (teacher + student) -> export_backbone -> the teacher's weights, exactly."""
    export = pytest.importorskip("openus_monai.networks.export", reason="export_backbone not available")
    teacher = _exported_encoder(tmp_path / "t.pt")
    student = {k: v + 1.0 for k, v in teacher.items()}
    network = {**{f"teacher.encoder.{k}": v for k, v in teacher.items()}, **{f"student.encoder.{k}": v for k, v in student.items()}}
    torch.save({"network": network, "epoch": torch.tensor(3)}, tmp_path / "ckpt.pt")
    export.export_backbone(tmp_path / "ckpt.pt", tmp_path / "exported.pt")
    loaded = _net(pretrained=str(tmp_path / "exported.pt")).encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in teacher.items())


# ----------------------------------------------------------------------------- transforms
def _png(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


# as the bundle's configs load: [H, W] arrays for PNG/JPEG/BMP/TIFF (PIL) and DICOM (ITK); NIfTI by nibabel
LOAD = LoadImaged(["image", "label"], reader=image_readers(), ensure_channel_first=True, allow_missing_keys=True)


def _pipeline(num_classes: int = 2, threshold=None) -> Compose:
    return Compose([LOAD, EnsureGray2Dd("image"), CheckSegPaird(num_classes=num_classes, threshold=threshold)])


def _messages(err: BaseException) -> str:
    out = []
    while err is not None:
        out.append(str(err))
        err = err.__cause__
    return "\n".join(out)


def test_masks_checked_and_converted(tmp_path):
    img = np.zeros((30, 50), np.uint8)
    img[:10] = 200  # top rows bright: arrays must be [H, W] as in the file
    m255 = np.zeros((30, 50), np.uint8)
    m255[5:15, 10:40] = 255
    image = _png(tmp_path / "img.png", img)
    out = _pipeline()({"image": image, "label": _png(tmp_path / "m255.png", m255)})
    assert out["image"].shape == (1, 30, 50) and float(out["image"][0, 0, 0]) == 200 and float(out["image"][0, 20, 0]) == 0
    assert out["label"].shape == (1, 30, 50)
    assert set(torch.unique(out["label"]).tolist()) == {0.0, 1.0} and int(out["label"].sum()) == 300
    # 0/1, RGB masks with equal channels, class indices, thresholded lossy masks
    assert int(_pipeline()({"image": image, "label": _png(tmp_path / "m01.png", (m255 > 0).astype(np.uint8))})["label"].sum()) == 300
    rgb = _png(tmp_path / "mrgb.png", np.repeat(m255[..., None], 3, axis=2))
    assert int(_pipeline()({"image": image, "label": rgb})["label"].sum()) == 300
    three = _png(tmp_path / "m3.png", (m255 > 0).astype(np.uint8) * 2)
    assert int(_pipeline(num_classes=3)({"image": image, "label": three})["label"].max()) == 2
    noisy = m255.copy()
    noisy[0, 0] = 3
    assert int(_pipeline(threshold=127)({"image": image, "label": _png(tmp_path / "noisy.png", noisy)})["label"].sum()) == 300
    # unlabeled images pass
    assert "label" not in _pipeline()({"image": image})


@pytest.mark.parametrize(
    "mask, problem",
    [
        (np.zeros((30, 40), np.uint8), "size"),
        (np.full((30, 50), 7, np.uint8), "unexpected values"),
        (np.stack([np.zeros((30, 50), np.uint8), np.ones((30, 50), np.uint8) * 255, np.zeros((30, 50), np.uint8)], -1), "channels"),
    ],
    ids=["size", "values", "colour"],
)
def test_bad_mask_error_names_both_files(tmp_path, mask, problem):
    image = _png(tmp_path / "case_17.png", np.zeros((30, 50), np.uint8))
    label = _png(tmp_path / "masks" / "case_17_mask.png", mask)
    with pytest.raises(Exception) as info:
        _pipeline()({"image": image, "label": label})
    text = _messages(info.value)
    assert image in text and label in text and problem in text


def test_gray_conversion_matches_pil(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    path = _png(tmp_path / "c.png", rgb)
    gray = LoadImaged("image", reader=image_readers(), ensure_channel_first=True)({"image": path})["image"]
    out = to_gray_2d(gray)
    expected = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert out.shape == (1, 20, 24) and np.abs(out[0].numpy() - expected).max() <= 1.0
    with pytest.raises(ValueError, match="5 channels"):
        to_gray_2d(torch.zeros(5, 4, 4), "x.tif")


def test_save_masks_png_and_nifti(tmp_path):
    img = np.zeros((30, 50), np.uint8)
    labels = np.zeros((30, 50), np.uint8)
    labels[3:9, 20:45] = 1
    png = LoadImaged("image", reader=image_readers(), ensure_channel_first=True)({"image": _png(tmp_path / "in" / "a b.png", img)})
    saver = SaveSegMaskd("pred", output_dir=tmp_path / "out", overlay=True)
    saver({**png, "pred": torch.as_tensor(labels)})
    written = np.asarray(Image.open(tmp_path / "out" / "a b.png"))
    assert written.dtype == np.uint8 and np.array_equal(written, labels)
    # a palette PNG: the lesion shows red in a viewer, and this project's readers get the indices back
    with Image.open(tmp_path / "out" / "a b.png") as im:
        assert im.mode == "P" and tuple(np.asarray(im.convert("RGB"))[5, 30]) == (255, 0, 0)
    again = LoadImaged("label", reader=image_readers(), ensure_channel_first=True)({"label": str(tmp_path / "out" / "a b.png")})
    assert np.array_equal(np.asarray(again["label"][0]), labels)
    assert (tmp_path / "out" / "a b_overlay.png").is_file()

    nii_path = tmp_path / "in" / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((30, 50), np.float32), np.diag([0.5, 0.5, 1.0, 1.0])), nii_path)
    nii = LoadImaged("image", reader=image_readers(), ensure_channel_first=True)({"image": str(nii_path)})
    assert nii["image"].shape == (1, 30, 50)
    saver({**nii, "pred": torch.as_tensor(labels)[None]})
    out = nib.load(tmp_path / "out" / "vol.nii.gz")
    assert out.get_data_dtype() == np.uint8 and np.array_equal(np.asarray(out.dataobj), labels)
    assert np.allclose(out.affine, np.diag([0.5, 0.5, 1.0, 1.0]))
