"""SelfAdaptiveMasking and LossMemory: counts, ALP, alpha/r_t from the schedule owner, seeding, state, rewind, crop-box mapping."""

from __future__ import annotations

import math

import pytest
import torch

from openus_monai.handlers import PretrainingSchedule, SelfAdaptiveMaskingHandler
from openus_monai.methods import LossMemory, SelfAdaptiveMasking, minmax

FULL = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0]])  # the whole image, not flipped


SCHEDULE = PretrainingSchedule(lr=1.0, mask_alpha=(0.1, 0.9), mask_r=(0.1, 0.9))
TOTAL = 101


def handler(**kw) -> SelfAdaptiveMasking:
    return SelfAdaptiveMasking(num_images=4, **kw)


def at(iteration: int) -> dict[str, float]:
    """alpha and r_t of the schedule owner at ``iteration`` of a 101-iteration run."""
    values = SCHEDULE(iteration, TOTAL, 1)
    return {"alpha": values["mask_alpha"], "r_t": values["mask_r_t"]}


def test_former_name_is_the_component():
    assert SelfAdaptiveMaskingHandler is SelfAdaptiveMasking


@pytest.mark.parametrize("iteration", [1, 37, 101])
def test_exact_counts_and_top_cells(iteration):
    h = handler(mask_ratio=0.8)
    sched = at(iteration)
    scores = torch.rand(2, 2, 49)
    boxes = FULL.expand(2, 2, 5)
    masks = h.generate(scores, boxes, torch.tensor([0, 1]), (7, 7), **sched)
    m, k = math.ceil(0.8 * 49), math.floor(sched["r_t"] * math.ceil(0.8 * 49))
    assert h.mask_counts(49, sched["r_t"]) == (m, k)
    assert (masks.flatten(2).sum(-1) == m).all()
    alp = h.priority(scores, boxes, torch.tensor([0, 1]), (7, 7), sched["alpha"])["alp"].flatten(2)
    top = alp.topk(k, dim=-1).indices
    assert masks.flatten(2).gather(-1, top).all()  # the k highest-ALP cells are masked


def test_alpha_zero_is_attention_alpha_one_is_loss():
    memory_map = torch.rand(16, 16)
    scores = torch.rand(1, 1, 49)
    for alpha, expected in ((0.0, "attention"), (1.0, "loss_prior")):
        h = handler()
        h.memory.maps[0], h.memory.seen[0] = memory_map, True
        maps = h.priority(scores, FULL[None], torch.tensor([0]), (7, 7), alpha)
        torch.testing.assert_close(maps["alp"], maps[expected])
    h = handler(strategy="attention")
    h.memory.maps[0], h.memory.seen[0] = memory_map, True
    maps = h.priority(scores, FULL[None], torch.tensor([0]), (7, 7), 0.5)  # the attention strategy ignores alpha
    torch.testing.assert_close(maps["alp"], maps["attention"])


def test_schedules_hit_end_points():
    assert at(1)["alpha"] == pytest.approx(0.1) and at(1)["r_t"] == pytest.approx(0.1)
    assert at(101)["alpha"] == pytest.approx(0.9) and at(101)["r_t"] == pytest.approx(0.9)
    assert at(51)["alpha"] == pytest.approx(0.5) and at(51)["r_t"] == pytest.approx(0.5)


def test_same_seed_same_masks_and_state_round_trip():
    scores, boxes, index, sched = torch.rand(2, 2, 49), FULL.expand(2, 2, 5), torch.tensor([0, 3]), at(1)
    a, b = handler(seed=5), handler(seed=5)
    torch.testing.assert_close(a.generate(scores, boxes, index, (7, 7), **sched), b.generate(scores, boxes, index, (7, 7), **sched))
    a.record(torch.rand(2, 2, 7, 7), a.generate(scores, boxes, index, (7, 7), **sched), boxes, index)
    state = a.state_dict()
    c = handler(seed=99)
    c.load_state_dict(state)
    torch.testing.assert_close(a.generate(scores, boxes, index, (7, 7), **sched), c.generate(scores, boxes, index, (7, 7), **sched))
    assert torch.equal(a.memory.maps, c.memory.maps)
    other = handler(seed=6).generate(scores, boxes, index, (7, 7), **sched)
    assert not torch.equal(other, handler(seed=5).generate(scores, boxes, index, (7, 7), **sched))


def test_rewind_undoes_the_last_masks():
    scores, boxes, index, sched = torch.rand(2, 2, 49), FULL.expand(2, 2, 5), torch.tensor([0, 3]), at(1)
    h = handler(seed=5)
    first = h.generate(scores, boxes, index, (7, 7), **sched)
    h.generate(scores, boxes, index, (7, 7), **sched)
    h.rewind()  # the second step was skipped: the next masks are the second step's again
    again = h.generate(scores, boxes, index, (7, 7), **sched)
    reference = handler(seed=5)
    reference.generate(scores, boxes, index, (7, 7), **sched)
    assert torch.equal(again, reference.generate(scores, boxes, index, (7, 7), **sched))
    assert not torch.equal(first, again)


def test_random_block_strategy_counts():
    h = handler(strategy="random_block", mask_ratio=0.5)
    masks = h.generate(torch.rand(3, 2, 49), FULL.expand(3, 2, 5), torch.tensor([0, 1, 2]), (7, 7), **at(1))
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
