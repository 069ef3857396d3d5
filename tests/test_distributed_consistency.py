"""Two gloo processes under torchrun compute what one process computes on the same global batch, and skip
the same non-finite steps.

The pretrain bundle (train.json + multi_gpu_train.json + tiny.json) runs for a few steps with 2 images per
process; a single process runs the same steps with 4 images per batch. For the comparison to mean something,
both see the same images in the same global batches with the same views:

- the single process draws its order from the same ``DistributedSampler`` permutation (``num_replicas=1``);
  with 2 replicas, global batch ``k`` holds the same 4 images (``perm[4k:4k+4]``), split 2 + 2;
- the random view augmentation is switched off (crops cover the whole image: ``*_scale = [1, 1]``; no
  flip, jitter, blur or gamma; no local masks), because its draws depend on the order in which a process
  reads its images, which differs between the two layouts by design;
- the global masks are all chosen by ALP (``mask_r = [1, 1]``), which is a deterministic function of the
  teacher attention and the loss memory, so the masks follow the images whatever the split.

Every loss term is a mean over equally sized per-process parts (every global view has exactly ``m`` masked
cells), so the mean of the per-process losses is the single-process loss up to float rounding. On one step
rank 1 alone reads NaN images: both ranks must skip it (the single process skips it too). Per-rank state is
written by a test-only ``run`` expression (product code has no hook for it).
"""

from __future__ import annotations

import json
import math
import re

import torch
from ignite.engine import Events

from test_bundle_pretrain import BUNDLE, CONFIGS, parsed, run_cli

from _helpers import REPO, demo_dataset

IMAGES, PER_RANK, EPOCHS = 8, 2, 2  # 2 steps per epoch, 4 steps (one of them skipped)
STEPS = IMAGES // (2 * PER_RANK) * EPOCHS
LOSS_RTOL = 1e-5  # measured 3.5e-7 (float rounding of batch 2 vs 4 GEMMs)

_TRAIN = json.loads((BUNDLE / "configs" / "train.json").read_text())
_CROP = next(i for i, t in enumerate(_TRAIN["train"]["preprocessing"]["transforms"]) if t["_target_"].endswith("MultiViewCropd"))
NO_AUG = {"_target_": "openus_monai.transforms.multiview.ViewAugmentation", "flip_prob": 0.0, "jitter_prob": 0.0, "blur_prob": 0.0, "gamma_prob": 0.0}
DETERMINISTIC_DATA = {
    "demo_images": IMAGES,
    "max_epochs": EPOCHS,
    "global_scale": [1.0, 1.0],
    "local_scale": [1.0, 1.0],
    f"train#preprocessing#transforms#{_CROP}#global_aug": NO_AUG,
    f"train#preprocessing#transforms#{_CROP}#local_aug": NO_AUG,
    "local_mask_prob": 0.0,
    "mask_r": [1.0, 1.0],
}
SAME_ORDER_SAMPLER = {
    "_target_": "DistributedSampler",
    "dataset": "@train#dataset",
    "shuffle": True,
    "even_divisible": True,
    "seed": "@seed",
    "num_replicas": 1,
    "rank": 0,
}
POISONED = 2  # on this step one rank (the only one, in the single-process run) reads NaN images
# test-only: poison rank 1's batch on step POISONED, record every step's loss, then write this rank's state
# (before multi_gpu_train.json's finalize)
DUMP_RUN = [
    f"$@train#trainer.add_event_handler(ignite.engine.Events.ITERATION_STARTED(once={POISONED}), "
    "lambda e: e.state.batch.update(global_views=e.state.batch['global_views'] * float('nan')) if dist.get_rank() == 1 else None)",
    "$@train#trainer.add_event_handler(ignite.engine.Events.ITERATION_COMPLETED, lambda e: @test_losses.append(e.state.output[0]['loss']))",
    "$@train#trainer.run()",
    "$torch.save({'losses': @test_losses, 'pid': os.getpid(), 'network': {k: v for k, v in @network.state_dict().items() if k != '_extra_state'}, "
    "'masking': @train#masking.state_dict()}, "
    "os.path.join(@output_dir, f'state_rank{dist.get_rank()}.pt'))",
]


def _assert_identical(a: dict, b: dict, what: str) -> float:
    assert a.keys() == b.keys(), what
    worst = max((x.double() - b[k].double()).abs().max().item() if x.is_floating_point() else float(not torch.equal(x, b[k])) for k, x in a.items())
    for key, value in a.items():
        assert torch.equal(value, b[key]), f"{what}: {key} differs between ranks"
    return worst


def test_two_ranks_agree_with_each_other_and_with_one_process(tmp_path):
    data = demo_dataset(tmp_path / "demo", n=IMAGES)
    # one process, global batch 2 x PER_RANK, the 2-replica sampler's permutation
    single = parsed(
        {"ckpt_dir": str(tmp_path / "single_models"), "output_dir": str(tmp_path / "single_eval"), "dataset_dir": str(data)}
        | DETERMINISTIC_DATA
        | {"batch_size": 2 * PER_RANK, "train#sampler": SAME_ORDER_SAMPLER}
    )
    for _ in single.get_parsed_content("initialize"):
        pass
    trainer = single.get_parsed_content("train#trainer")
    single_losses = []
    trainer.add_event_handler(
        Events.ITERATION_STARTED(once=POISONED), lambda e: e.state.batch.update(global_views=e.state.batch["global_views"] * math.nan)
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: single_losses.append(e.state.output[0]["loss"]))
    trainer.run()
    assert len(single_losses) == STEPS

    extra = tmp_path / "dump.json"
    extra.write_text(json.dumps(DETERMINISTIC_DATA | {"batch_size": PER_RANK, "+imports": ["$import ignite"], "test_losses": "$[]", "run": DUMP_RUN}))
    configs = CONFIGS + [str(BUNDLE / "configs" / "multi_gpu_train.json"), str(extra)]
    args = ["--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run", "--config_file", str(configs)]
    args += ["--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval"), "--dataset_dir", str(data)]
    proc = run_cli(args, cwd=REPO, module=("-m", "torch.distributed.run"), timeout=600)
    log = proc.stdout + proc.stderr

    ranks = [torch.load(tmp_path / "eval" / f"state_rank{r}.pt", weights_only=True) for r in (0, 1)]
    # identical on both ranks, bit for bit: teacher (and student), iBOT centres, the masking handler's state;
    # the step with NaN on rank 1 only was skipped by both (else the replicas would differ, or DDP hang)
    network = _assert_identical(ranks[0]["network"], ranks[1]["network"], "network")
    assert any(k.startswith("teacher.") for k in ranks[0]["network"]) and "ibot_loss.center_patch" in ranks[0]["network"]
    _assert_identical(ranks[0]["masking"], ranks[1]["masking"], "masking")
    assert ranks[0]["masking"]["memory.seen"].flatten(1).any(1).all(), "each rank's memory should hold losses of all images"
    assert network == 0.0

    # the global loss (mean over ranks) is the one-process loss on the same global batch
    distributed = [(a + b) / 2 for a, b in zip(ranks[0]["losses"], ranks[1]["losses"])]
    assert len(distributed) == STEPS
    assert [i + 1 for i, x in enumerate(distributed) if not math.isfinite(x)] == [POISONED], distributed
    assert [i + 1 for i, x in enumerate(single_losses) if not math.isfinite(x)] == [POISONED], single_losses
    gaps = [abs(d - s) / abs(s) for i, (d, s) in enumerate(zip(distributed, single_losses)) if i + 1 != POISONED]
    assert max(gaps) < LOSS_RTOL, (distributed, single_losses)
    teacher_gap = max(
        (v - single.get_parsed_content("network").state_dict()[k]).abs().max().item() for k, v in ranks[0]["network"].items() if k.startswith("teacher.")
    )
    assert teacher_gap < 1e-6, teacher_gap
    one = single.get_parsed_content("train#masking").state_dict()
    assert torch.equal(one["memory.seen"], ranks[0]["masking"]["memory.seen"])  # the same cells were masked
    memory_gap = (one["memory.maps"] - ranks[0]["masking"]["memory.maps"]).abs().max().item()
    assert memory_gap < 1e-4, memory_gap
    print(f"single vs 2 ranks: max relative loss gap {max(gaps):.2e}, teacher weights {teacher_gap:.2e}, loss memory {memory_gap:.2e}")

    # rank 0 alone writes checkpoints and logs
    assert len(re.findall(r"train_loss: ", log)) == STEPS, log[-3000:]
    events = [p.name for p in (tmp_path / "eval").glob("events.out.tfevents.*")]
    assert events and all(f".{ranks[0]['pid']}." in name for name in events), (events, ranks[0]["pid"], ranks[1]["pid"])
    saved = torch.load(tmp_path / "models" / "pretrain_final.pt", weights_only=True)
    assert saved["trainer"]["iteration"] == STEPS
    for key, value in ranks[0]["network"].items():
        assert torch.equal(saved["network"][key], value), key
    _assert_identical(saved["network"]["_extra_state"]["masking"], ranks[0]["masking"], "checkpointed masking state")
