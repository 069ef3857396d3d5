"""MultiViewCropd and RandomBlockMaskd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openus_monai.transforms import MultiViewCropd, RandomBlockMaskd, ViewAugmentation, random_block_mask

NO_AUG = ViewAugmentation(flip_prob=0, jitter_prob=0, blur_prob=0, gamma_prob=0)


def test_views_shapes_boxes_and_channels():
    t = MultiViewCropd("image", n_global=2, global_size=64, n_local=3, local_size=32, out_channels=3)
    t.set_random_state(0)
    out = t({"image": torch.rand(1, 120, 90)})
    assert out["global_views"].shape == (2, 3, 64, 64) and out["local_views"].shape == (3, 3, 32, 32)
    for key in ("global_boxes", "local_boxes"):
        boxes = out[key]
        assert ((boxes[:, :4] >= 0) & (boxes[:, :4] <= 1)).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert set(boxes[:, 4].tolist()) <= {0.0, 1.0}
    assert torch.equal(out["global_views"][:, 0], out["global_views"][:, 2])  # gray repeated


def test_boxes_carry_points_between_view_and_source():
    """A bright dot in the source lands where the box (and flip) says it should."""
    image = torch.zeros(1, 100, 100)
    image[0, 30, 70] = 1.0
    for flip in (0.0, 1.0):
        aug = ViewAugmentation(flip_prob=flip, jitter_prob=0, blur_prob=0, gamma_prob=0)
        t = MultiViewCropd("image", n_global=1, global_size=100, global_scale=(1.0, 1.0), n_local=0, global_aug=aug)
        t.set_random_state(1)
        out = t({"image": image})
        top, left, bottom, right, flipped = out["global_boxes"][0].tolist()
        y, x = divmod(int(out["global_views"][0, 0].argmax()), 100)
        vy = ((30 + 0.5) / 100 - top) / (bottom - top)
        vx = ((70 + 0.5) / 100 - left) / (right - left)
        vx = 1 - vx if flipped else vx
        assert abs((y + 0.5) / 100 - vy) < 0.03 and abs((x + 0.5) / 100 - vx) < 0.03
        assert flipped == flip


def test_views_are_seeded():
    a, b = MultiViewCropd("image", global_size=32, local_size=32, n_local=2), MultiViewCropd("image", global_size=32, local_size=32, n_local=2)
    a.set_random_state(3), b.set_random_state(3)
    image = torch.rand(1, 64, 64)
    torch.testing.assert_close(a({"image": image})["local_views"], b({"image": image})["local_views"])


def test_block_mask_counts_and_blocks():
    rng = np.random.RandomState(0)
    for n in (0, 1, 5, 20, 49):
        mask = random_block_mask(rng, (7, 7), n)
        assert mask.sum() <= n and mask.sum() >= min(n, 1) * 0.5
    t = RandomBlockMaskd("local_views", cell=32, ratio=0.5, prob=1.0)
    t.set_random_state(0)
    out = t({"local_views": torch.zeros(4, 1, 96, 96)})
    assert out["local_masks"].shape == (4, 3, 3) and out["local_masks"].dtype == torch.bool
    assert (out["local_masks"].flatten(1).sum(1) > 0).all()
    t.prob = 0.0
    assert not t({"local_views": torch.zeros(2, 1, 96, 96)})["local_masks"].any()
    with pytest.raises(ValueError, match="not a multiple of the mask cell 32"):
        t({"local_views": torch.zeros(1, 1, 80, 96)})
