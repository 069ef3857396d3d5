"""The pretraining bundle's ``configs/inference.json``: a folder of images -> one embeddings file per run.

Three images (the third a copy of the first, under another name) with the zoo-style ``models/model.pt`` (the
``network_def`` state dict): three rows of the declared width (``metadata.json``'s ``pred`` channels), in the
folder's order, the copy's row equal to the original's, each row the network's output for that image; with
``feature_maps`` the four stage maps as well.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from _helpers import REPO

CONFIGS = REPO / "bundles" / "openus_pretrain" / "configs"
SIZE = 64


def test_feature_extraction_writes_one_embedding_per_image(tmp_path):
    from monai.bundle import ConfigParser, ConfigWorkflow
    from PIL import Image

    from openus_monai.data import synthesize_dataset

    demo = tmp_path / "demo"
    synthesize_dataset(demo, n=3, seed=0, size=SIZE)
    images = sorted(p for p in demo.rglob("*.png") if "mask" not in p.name)[:2]
    folder = tmp_path / "images"
    folder.mkdir()
    for name, source in (("a.png", images[0]), ("b.png", images[1]), ("c.png", images[0])):
        shutil.copy(source, folder / name)

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    (tmp_path / "models").mkdir()
    torch.save(net.state_dict(), tmp_path / "models" / "model.pt")

    workflow = ConfigWorkflow(config_file=str(CONFIGS / "inference.json"), meta_file=str(CONFIGS / "metadata.json"),
                              workflow_type="infer", dataset_dir=str(folder), ckpt_dir=str(tmp_path / "models"),
                              output_dir=str(tmp_path / "out"), image_size=SIZE, feature_maps=True, num_workers=0, batch_size=2)
    workflow.initialize()
    assert workflow.check_properties() == []
    workflow.run()
    workflow.finalize()

    record = torch.load(tmp_path / "out" / "embeddings.pt", weights_only=True)
    width = json.loads((CONFIGS / "metadata.json").read_text())["network_data_format"]["outputs"]["pred"]["num_channels"]
    assert [Path(p).name for p in record["images"]] == ["a.png", "b.png", "c.png"]
    embedding = record["embedding"]
    assert embedding.shape == (3, width)
    # the same image twice: the same embedding (to float rounding: a and c sit in batches of different make-up)
    assert (embedding[0] - embedding[2]).abs().max().item() <= 1e-5
    assert (embedding[0] - embedding[1]).abs().max() > 1e-4, "different images gave the same embedding"
    assert [tuple(record[f"map{i}"].shape) for i in range(4)] == [
        (3, c, SIZE // 2 ** (i + 2), SIZE // 2 ** (i + 2)) for i, c in enumerate(net.encoder.dims)]
    # each row is the network's pooled output for that image (the bundle's preprocessing: gray, [0, 1])
    x = torch.from_numpy(__import__("numpy").asarray(Image.open(folder / "b.png").convert("L"), dtype="float32"))
    x = (x - x.min()) / (x.max() - x.min())
    with torch.no_grad():
        expected = net.eval()(x[None, None])
    assert (expected[0] - embedding[1]).abs().max().item() <= 1e-4
