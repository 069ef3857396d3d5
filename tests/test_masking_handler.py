"""SelfAdaptiveMaskingHandler and LossMemory: counts, ALP, schedules, seeding, state, crop-box mapping."""

from __future__ import annotations

import math

import pytest
import torch

from openus_monai.handlers import LossMemory, SelfAdaptiveMaskingHandler
from openus_monai.handlers.masking import minmax

FULL = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0]])  # the whole image, not flipped


def handler(**kw) -> SelfAdaptiveMaskingHandler:
    h = SelfAdaptiveMaskingHandler(num_images=4, total_iterations=101, **kw)
    h.iteration = 1
    return h


@pytest.mark.parametrize("iteration", [1, 37, 101])
def test_exact_counts_and_top_cells(iteration):
    h = handler(mask_ratio=0.8)
    h.iteration = iteration
    scores = torch.rand(2, 2, 49)
    boxes = FULL.expand(2, 2, 5)
    masks = h.generate(scores, boxes, torch.tensor([0, 1]), (7, 7))
    m, k = math.ceil(0.8 * 49), math.floor(h.r_t() * math.ceil(0.8 * 49))
    assert h.mask_counts(49) == (m, k)
    assert (masks.flatten(2).sum(-1) == m).all()
    alp = h.priority(scores, boxes, torch.tensor([0, 1]), (7, 7))["alp"].flatten(2)
    top = alp.topk(k, dim=-1).indices
    assert masks.flatten(2).gather(-1, top).all()  # the k highest-ALP cells are masked


def test_alpha_zero_is_attention_alpha_one_is_loss():
    memory_map = torch.rand(16, 16)
    scores = torch.rand(1, 1, 49)
    for alpha, expected in ((0.0, "attention"), (1.0, "loss_prior")):
        h = handler(alpha=(alpha, alpha))
        h.memory.maps[0], h.memory.seen[0] = memory_map, True
        maps = h.priority(scores, FULL[None], torch.tensor([0]), (7, 7))
        torch.testing.assert_close(maps["alp"], maps[expected])
    assert handler(strategy="attention", alpha=(0.5, 0.5)).alpha() == 0.0


def test_schedules_hit_end_points():
    h = handler()
    h.iteration = 1
    assert h.alpha() == pytest.approx(0.1) and h.r_t() == pytest.approx(0.1)
    h.iteration = 101
    assert h.alpha() == pytest.approx(0.9) and h.r_t() == pytest.approx(0.9)
    h.iteration = 51
    assert h.alpha() == pytest.approx(0.5) and h.r_t() == pytest.approx(0.5)


def test_same_seed_same_masks_and_state_round_trip():
    scores, boxes, index = torch.rand(2, 2, 49), FULL.expand(2, 2, 5), torch.tensor([0, 3])
    a, b = handler(seed=5), handler(seed=5)
    torch.testing.assert_close(a.generate(scores, boxes, index, (7, 7)), b.generate(scores, boxes, index, (7, 7)))
    a.record(torch.rand(2, 2, 7, 7), a.generate(scores, boxes, index, (7, 7)), boxes, index)
    state = a.state_dict()
    c = handler(seed=99)
    c.load_state_dict(state)
    torch.testing.assert_close(a.generate(scores, boxes, index, (7, 7)), c.generate(scores, boxes, index, (7, 7)))
    assert torch.equal(a.memory.maps, c.memory.maps)
    assert not torch.equal(handler(seed=6).generate(scores, boxes, index, (7, 7)), handler(seed=5).generate(scores, boxes, index, (7, 7)))


def test_random_block_strategy_counts():
    h = handler(strategy="random_block", mask_ratio=0.5)
    masks = h.generate(torch.rand(3, 2, 49), FULL.expand(3, 2, 5), torch.tensor([0, 1, 2]), (7, 7))
    counts = masks.flatten(2).sum(-1)
    assert (counts <= 25).all() and (counts >= 15).all()


def test_loss_memory_written_through_one_box_reads_through_another():
    memory = LossMemory(num_images=2, resolution=16, momentum=0.0)
    # the right half of the image, flipped; a loss pattern that rises with the view's x
    box_a = torch.tensor([[[0.0, 0.5, 1.0, 1.0, 1.0]]])
    loss = torch.arange(4.0).repeat(4, 1)[None, None]  # [1, 1, 4, 4], value = view column
    memory.write(torch.tensor([1]), box_a, loss, torch.ones(1, 1, 4, 4, dtype=torch.bool))
    # read through the top-right quarter, not flipped: view x grows with source x, which in view A ran backwards
    box_b = torch.tensor([[[0.0, 0.5, 0.5, 1.0, 0.0]]])
    read = memory.read(torch.tensor([1]), box_b, (2, 2))[0, 0]
    assert read[0, 0] > read[0, 1]  # source left of the half = view-A right = high loss
    torch.testing.assert_close(read[:, 0], read[:, 0].new_full((2,), read[0, 0].item()))
    assert read.min() >= 0 and read.max() <= 3
    # unseen image 0 falls back to the running mean of what was written
    fallback = memory.read(torch.tensor([0]), box_b, (2, 2))
    torch.testing.assert_close(fallback, read[None, None])
    # only masked cells write
    memory.write(torch.tensor([0]), FULL[None], torch.full((1, 1, 4, 4), 9.0), torch.zeros(1, 1, 4, 4, dtype=torch.bool))
    assert not memory.seen[0].any()


def test_minmax_rows():
    x = torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0]])
    torch.testing.assert_close(minmax(x), torch.tensor([[0.0, 1.0, 0.5], [0.0, 0.0, 0.0]]))
