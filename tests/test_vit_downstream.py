"""ViT encoders downstream: a ViT encoder file (what the usf_mae / usfm recipes write) is all that openus_seg and
openus_cls need (``--pretrained FILE``, with ``init`` random and ``freeze_encoder`` too), the decoder and pooled
features that fit each encoder family, stochastic depth and layer-wise decay of the ViT."""

from __future__ import annotations

import pytest
import torch

from openus_monai.bundle.network_record import read_network_record
from openus_monai.networks import OpenUSClassifier, OpenUSFeatureExtractor, OpenUSSegNet, UNETRDecoder, build_vit, encoder_file
from openus_monai.networks.task_heads import segmentation_decoder

from _helpers import REPO, demo_dataset

VIT = {"hidden_size": 32, "num_layers": 4, "num_heads": 2}


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vit") / "backbone.pt"
    torch.save(encoder_file(build_vit(VIT, img_size=64), {"method": "usf_mae", "image_size": 64}), path)
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_dataset(tmp_path_factory.mktemp("vit_demo") / "demo", n=16, size=64)


def _train(bundle: str, overrides: dict) -> None:
    from monai.bundle import ConfigWorkflow

    root = REPO / "bundles" / bundle
    workflow = ConfigWorkflow(
        config_file=[str(root / "configs" / "train.json"), str(root / "configs" / "tiny.json")],
        meta_file=str(root / "configs" / "metadata.json"), workflow_type="train", bundle_root=str(root), **overrides,
    )
    workflow.initialize()
    try:
        workflow.run()
    finally:
        workflow.finalize()


@pytest.mark.parametrize(("bundle", "init", "freeze"), [("openus_seg", "pretrained", True), ("openus_cls", "pretrained", True), ("openus_seg", "random", False)])
def test_vit_file_trains_a_downstream_bundle_with_only_pretrained(bundle, init, freeze, vit_file, demo, tmp_path):
    _train(bundle, {"dataset_dir": str(demo), "pretrained": str(vit_file), "init": init, "freeze_encoder": freeze, "max_epochs": 1,
                    "max_train_images": 8, "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval")})
    saved = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    record = read_network_record(tmp_path / "models" / "model.pt")
    assert record.args["encoder"]["_target_"] == "openus_monai.networks.ViTEncoder" and record.args["encoder"]["args"]["num_layers"] == 4
    pretrained = torch.load(vit_file, weights_only=True)["state_dict"]
    encoder = {k.removeprefix("encoder."): v for k, v in saved["model"].items() if k.startswith("encoder.")}
    assert set(encoder) == set(pretrained)
    drawn = [k for k, v in pretrained.items() if v.is_floating_point() and v.numel() > 1 and v.std() > 0 and "position" not in k]
    same = [torch.equal(encoder[k], pretrained[k]) for k in drawn]  # the randomly drawn tensors (not norms' ones, not sin-cos)
    assert all(same) if init == "pretrained" else not any(same)  # frozen pretrained weights kept; random ones are not the file's
    # model.pt alone rebuilds the network (inference and evaluation do this)
    network = record.build()
    network.load_state_dict(saved["model"], strict=True)
    out = network.eval()(torch.rand(2, 1, 64, 64))
    assert out.shape == ((2, 2, 64, 64) if bundle == "openus_seg" else (2, network.num_classes))
    if bundle == "openus_seg":
        assert isinstance(network.decoder, UNETRDecoder)


def test_each_encoder_family_gets_its_head():
    vit = build_vit(VIT, img_size=64)
    seg = OpenUSSegNet(vit, num_classes=3, freeze_encoder=True)
    assert isinstance(seg.decoder, UNETRDecoder) and seg(torch.rand(1, 1, 48, 64)).shape == (1, 3, 48, 64)  # any multiple of 16
    assert all(not p.requires_grad for p in seg.encoder.parameters())
    cls = OpenUSClassifier(build_vit(VIT, img_size=64), num_classes=2).eval()
    x = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(cls.forward_features(x), cls.encoder(x).tokens.mean(1))  # the ViT's mean token
    embedding, maps = OpenUSFeatureExtractor(cls.encoder).forward_all(x)  # the pretraining bundle's inference
    torch.testing.assert_close(embedding, cls.forward_features(x))
    assert [m.shape for m in maps] == [(2, 32, 4, 4)] * 4
    with pytest.raises(ValueError, match="4 out_indices"):
        segmentation_decoder(build_vit({**VIT, "num_layers": 2}), 2)


def test_vit_stochastic_depth_and_layer_decay():
    torch.manual_seed(0)
    plain, dropped = build_vit(VIT, img_size=64), build_vit(VIT, img_size=64, drop_path_rate=0.5)
    dropped.load_state_dict(plain.state_dict())
    x = torch.rand(4, 1, 64, 64)
    tokens, _ = plain.embed(x)
    reference = tokens
    for block in plain.vit.blocks:  # MONAI's own block forward: what the encoder runs without stochastic depth
        reference = block(reference)
    torch.testing.assert_close(plain(x).tokens, plain.vit.norm(reference))
    torch.testing.assert_close(dropped.eval()(x).tokens, plain(x).tokens)  # eval: no drop
    dropped.train()
    assert not torch.equal(dropped(x).tokens, dropped(x).tokens)  # train: random depth
    assert "drop_path_rate" not in dropped.network_args  # a training option, not the architecture

    net = OpenUSSegNet(build_vit(VIT, img_size=64), num_classes=2)
    groups = net.param_groups(lr=1.0, weight_decay=0.05, layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert scale[id(net.encoder.vit.patch_embedding.patch_embeddings.weight)] == 0.5**5  # embedding: deepest decay
    assert scale[id(net.encoder.vit.blocks[3].mlp.linear1.weight)] == 0.5  # last block
    assert scale[id(net.encoder.vit.norm.weight)] == 1.0 and scale[id(net.decoder.out.conv.conv.weight)] == 1.0
