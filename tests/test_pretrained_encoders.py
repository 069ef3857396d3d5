"""Encoders from ``--pretrained FILE`` alone: the seg and cls bundles build the encoder a file holds, for the
pretraining bundle's ``backbone.pt`` (self-describing or a plain state dict), ``export-backbone``'s output,
original OpenUS checkpoints and the bundles' own ``model.pt``; ``--init random`` is the same architecture with
fresh weights; unreadable or mismatched files are errors naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from openus_monai.io import atomic_torch_save
from openus_monai.networks import (
    OpenUSClassifier,
    OpenUSSegNet,
    VMamba,
    build_pretrained_encoder,
    encoder_config_from_checkpoint,
)
from openus_monai.networks.export import export_backbone

REPO = Path(__file__).resolve().parents[1]
ARCH = {"depths": [1, 1, 2, 1], "dims": [16, 32, 64, 128]}  # not tiny.json's, nor a preset: it must come from the file


def _encoder(in_channels: int = 1) -> VMamba:
    torch.manual_seed(3)
    encoder = VMamba(**ARCH, in_channels=in_channels)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(torch.randn_like(p))  # weights that random initialisation cannot reproduce
    return encoder


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, tuple[Path, VMamba]]:
    """One file of each kind, all holding the same encoder."""
    d = tmp_path_factory.mktemp("pretrained")
    enc = _encoder()
    state = enc.state_dict()
    out = {}
    out["backbone_plain"] = atomic_torch_save(state, d / "backbone_plain.pt")  # today's backbone.pt
    out["backbone_record"] = atomic_torch_save(  # the self-describing form (networks.record.encoder_file)
        {"state_dict": state, "network_config": {"_target_": "openus_monai.networks.VMamba", "args": {**ARCH, "in_channels": 1}},
         "meta": {"method": "openus", "image_size": 96}}, d / "backbone_record.pt")
    pretrain = {"network": {f"teacher.encoder.{k}": v for k, v in state.items()} | {"student.head.w": torch.zeros(2)}}
    out["pretrain_final"] = atomic_torch_save(pretrain, d / "pretrain_final.pt")
    out["exported"] = export_backbone(d / "pretrain_final.pt", d / "exported.pt")
    out["original"] = atomic_torch_save(  # original OpenUS: teacher / student dicts, DDP + backbone prefixes
        {"teacher": {f"module.backbone.{k}": v for k, v in state.items()} | {"module.head.last_layer.weight": torch.zeros(4, 4)},
         "student": {f"module.backbone.{k}": torch.zeros_like(v) for k, v in state.items()}, "epoch": 100}, d / "original.pt")
    seg = OpenUSSegNet(enc, num_classes=2)
    out["seg_model"] = atomic_torch_save(
        {"model": seg.state_dict(), "network_config": {"_target_": "openus_monai.networks.OpenUSSegNet",
                                                        "args": {"encoder": ARCH, "in_channels": 1, "num_classes": 2}}}, d / "seg_model.pt")
    cls = OpenUSClassifier(enc, num_classes=3)
    out["cls_model"] = atomic_torch_save(
        {"model": cls.state_dict(), "network_config": {"_target_": "openus_monai.networks.OpenUSClassifier",
                                                        "args": {"encoder": "vmamba_small", "num_classes": 3}}}, d / "cls_model.pt")
    return {k: (Path(v), enc) for k, v in out.items()}


def _network_def(bundle: str, **overrides):
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
    for k, v in overrides.items():
        parser[k] = v
    return parser


KINDS = ["backbone_plain", "backbone_record", "pretrain_final", "exported", "original", "seg_model", "cls_model"]


@pytest.mark.parametrize("kind", KINDS)
def test_config_from_checkpoint(files, kind):
    path, _ = files[kind]
    record = encoder_config_from_checkpoint(path)
    assert record["_target_"] == "openus_monai.networks.VMamba"
    assert record["args"]["depths"] == ARCH["depths"] and record["args"]["dims"] == ARCH["dims"]
    assert record["args"]["in_channels"] == 1


@pytest.mark.parametrize("bundle", ["openus_seg", "openus_cls"])
@pytest.mark.parametrize("kind", KINDS)
def test_bundles_build_encoder_from_pretrained_alone(files, kind, bundle):
    """train.json + --pretrained FILE, no encoder option: the file's encoder with its exact weights; the saved
    record names that architecture; --init random: same shapes, other weights."""
    path, enc = files[kind]
    parser = _network_def(bundle, pretrained=str(path))
    net = parser.get_parsed_content("network_def")
    assert list(net.encoder.depths) == ARCH["depths"] and list(net.encoder.dims) == ARCH["dims"]
    got = net.encoder.state_dict()
    assert got.keys() == enc.state_dict().keys()
    assert all(torch.equal(got[k], v) for k, v in enc.state_dict().items())
    record = parser.get_parsed_content("network_record").state_dict()
    assert record["args"]["encoder"]["depths"] == ARCH["depths"] and "init" not in record["args"]

    rand = _network_def(bundle, pretrained=str(path), init="random").get_parsed_content("network_def").encoder.state_dict()
    assert {k: v.shape for k, v in rand.items()} == {k: v.shape for k, v in got.items()}
    assert not torch.equal(rand["layers.2.blocks.1.op.in_proj.weight"], got["layers.2.blocks.1.op.in_proj.weight"])


def test_encoder_from_loaded_content(files):
    """A file read once builds the pretrained encoder and a random one; errors then name "checkpoint"."""
    path, enc = files["backbone_record"]
    content = torch.load(path, weights_only=True)
    got = build_pretrained_encoder(content).state_dict()
    assert all(torch.equal(got[k], v) for k, v in enc.state_dict().items())
    rand = build_pretrained_encoder(content, init="random").state_dict()
    assert not torch.equal(rand["layers.2.blocks.1.op.in_proj.weight"], got["layers.2.blocks.1.op.in_proj.weight"])
    content["state_dict"] = {k: v for k, v in content["state_dict"].items() if "layers.3" not in k}
    with pytest.raises(ValueError, match="^checkpoint: the encoder it describes has tensors the file lacks"):
        build_pretrained_encoder(content)


def test_three_channel_file_into_grayscale_network(tmp_path):
    enc = _encoder(in_channels=3)
    atomic_torch_save(enc.state_dict(), tmp_path / "rgb.pt")
    net = OpenUSSegNet(pretrained=tmp_path / "rgb.pt", in_channels=1)
    assert net.encoder.in_channels == 1
    assert torch.allclose(net.encoder.patch_embed[0].weight, enc.patch_embed[0].weight.sum(1, keepdim=True))


def test_unknown_init_and_bad_files_are_named(tmp_path, files):
    path, _ = files["backbone_plain"]
    with pytest.raises(ValueError, match="init must be one of"):
        build_pretrained_encoder(path, init="imagenet")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        build_pretrained_encoder(tmp_path / "junk.pt")
    atomic_torch_save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "not_vmamba.pt")
    with pytest.raises(ValueError, match="not_vmamba.pt.*cannot tell which encoder"):
        build_pretrained_encoder(tmp_path / "not_vmamba.pt")
    state = torch.load(path, weights_only=True)
    atomic_torch_save({"state_dict": state, "network_config": {"_target_": "openus_monai.networks.VMamba",
                                                               "args": {**ARCH, "dims": 32, "in_channels": 1}}}, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="mismatch.pt.*shapes do not match"):
        build_pretrained_encoder(tmp_path / "mismatch.pt")
    with pytest.raises(FileNotFoundError):
        build_pretrained_encoder(tmp_path / "absent.pt")


@pytest.mark.parametrize(
    "bundle, settings",
    [
        ("openus_seg", {"image_size": [64, 64], "max_epochs": 1, "batch_size": 4, "num_workers": 0, "num_threads": 1, "max_train_images": 8}),
        ("openus_cls", {"image_size": 64, "max_epochs": 1, "warmup_epochs": 0, "batch_size": 8, "num_workers": 0, "num_threads": 1, "amp": False}),
    ],
)
def test_one_epoch_and_evaluation_with_pretrained_alone(files, tmp_path, bundle, settings):
    """train.json + --pretrained FILE (no encoder option) trains one epoch; evaluate.json rebuilds the same
    network from model.pt's record, with no encoder option either."""
    from monai.bundle import ConfigWorkflow

    from _helpers import demo_dataset

    configs = REPO / "bundles" / bundle / "configs"
    data = demo_dataset(tmp_path / "demo", n=12, size=64)
    common = {"dataset_dir": str(data), "ckpt_dir": str(tmp_path / "models"), **settings}

    def run(names, **overrides):
        workflow = ConfigWorkflow(config_file=[str(configs / n) for n in names], meta_file=str(configs / "metadata.json"),
                                  logging_file=False, workflow_type="train", **{**common, **overrides})
        workflow.initialize()
        workflow.run()
        net = workflow.parser.get_parsed_content("network")
        workflow.finalize()
        return net

    path, _ = files["exported"]
    trained = run(["train.json"], pretrained=str(path), output_dir=str(tmp_path / "train"))
    assert list(trained.encoder.depths) == ARCH["depths"]
    record = torch.load(tmp_path / "models" / "model.pt", weights_only=True)["network_config"]
    assert record["args"]["encoder"]["depths"] == ARCH["depths"]
    evaluated = run(["train.json", "evaluate.json"], output_dir=str(tmp_path / "eval"))
    assert list(evaluated.encoder.depths) == ARCH["depths"]
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_pretraining_checkpoint_with_encoder_entry(files, tmp_path):
    """A pretraining checkpoint that names its encoder (``encoder_config``) is built as that entry says."""
    path, enc = files["pretrain_final"]
    content = torch.load(path, weights_only=True)
    content["encoder_config"] = {"_target_": "openus_monai.networks.VMamba", "args": {**ARCH, "in_channels": 1},
                                 "prefix": "teacher.encoder.", "meta": {}}
    atomic_torch_save(content, tmp_path / "named.pt")
    got = build_pretrained_encoder(tmp_path / "named.pt").state_dict()
    assert all(torch.equal(got[k], v) for k, v in enc.state_dict().items())


REFERENCE = REPO.parent / "shared" / "reference"


def test_original_openus_checkpoint_gives_the_reference_features(tmp_path):
    """An original OpenUS teacher checkpoint (the reference backbone's weights under teacher -> module.backbone.),
    given alone, builds an encoder whose stage outputs equal the original code's."""
    vectors = REFERENCE / "openus_vmamba_tiny_vectors.pt"
    if not vectors.is_file():
        pytest.skip(f"reference vectors not found at {vectors}")
    ref = torch.load(vectors, weights_only=True)
    atomic_torch_save({"teacher": {f"module.backbone.{k}": v for k, v in ref["state_dict"].items()}}, tmp_path / "checkpoint0150.pth")
    enc = build_pretrained_encoder(tmp_path / "checkpoint0150.pth", in_channels=3).eval()
    assert list(enc.depths) == ref["config"]["depths"] and enc.dims[0] == ref["config"]["dims"]
    with torch.no_grad():
        maps = enc(ref["input"])
    for i, (ours, theirs) in enumerate(zip(maps, ref["stage_outputs"])):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4, msg=f"stage {i}")


def test_original_vmamba_small_shapes_read_as_vmamba_small():
    import json

    from openus_monai.networks import infer_vmamba_config

    keys = REFERENCE / "openus_vmamba_small_keys.json"
    if not keys.is_file():
        pytest.skip(f"key list not found at {keys}")
    shapes = json.loads(keys.read_text())["state_dict"]
    state = {k: torch.empty(v) for k, v in shapes.items() if not k.startswith(("decoder", "ema_"))}
    assert infer_vmamba_config(state) == {"depths": [2, 2, 15, 2], "dims": [96, 192, 384, 768], "in_channels": 3,
                                          "d_state": 1, "ssm_ratio": 2.0, "dt_rank": "auto", "mlp_ratio": 4.0}


def test_export_backbone_adds_provenance_meta(files, tmp_path):
    """``export-backbone --meta`` adds provenance to a self-describing file; a plain state dict refuses it."""
    path, _ = files["pretrain_final"]
    content = torch.load(path, weights_only=True)
    content["encoder_config"] = {"_target_": "openus_monai.networks.VMamba", "args": {**ARCH, "in_channels": 1},
                                 "prefix": "teacher.encoder.", "meta": {"method": "openus", "image_size": 128}}
    out = export_backbone(content, tmp_path / "shipped.pt", meta={"epochs": 30, "corpus": ("busi", "ddti")})
    meta = torch.load(out, weights_only=True)["meta"]
    assert meta == {"method": "openus", "image_size": 128, "epochs": 30, "corpus": ["busi", "ddti"]}
    with pytest.raises(ValueError, match="cannot carry meta"):
        export_backbone(path, tmp_path / "plain.pt", meta={"epochs": 30})
