"""kill -9 and resume, for the three bundles (CLI subprocesses, tiny configs, CPU, one thread).

Per bundle: an uninterrupted reference run; then in one ``ckpt_dir`` a run SIGKILLed in the middle of a
checkpoint write (test-only ``tests/fault_hooks/sitecustomize.py`` makes that ``torch.save`` write half the
file and sleep), a ``--resume true`` run SIGKILLed at a random (seeded) iteration, and a ``--resume true``
run to the end. Each resume must restore the newest COMPLETE checkpoint (never the partial file, which is
moved aside as ``*.rejected``) and the final weights must equal the reference within 1e-6.
"""

from __future__ import annotations

import pytest
import torch

from fault_injection import BUNDLES, complete_checkpoints, run_chain
from openus_monai.io import latest_checkpoint
from openus_monai.io import atomic_torch_save


@pytest.mark.parametrize("bundle", ["openus_pretrain", "openus_seg", "openus_cls"])
def test_kill_during_write_and_at_random_then_resume_equals_uninterrupted(bundle, tmp_path):
    result = run_chain(bundle, tmp_path, kills=2, seed=0, in_process_reference=True)
    during_write, at_random, last = result.attempts
    logs = "\n---\n".join(a.log_tail for a in result.attempts)

    # 1. killed while writing a periodic checkpoint: the file on disk is partial, an older complete one exists
    assert during_write.killed and during_write.partial_file, logs
    assert during_write.partial_file.startswith(BUNDLES[bundle]["prefix"] + "_checkpoint_")
    assert during_write.complete_after and during_write.complete_after != during_write.partial_file, logs

    # 2. resumed from exactly the newest complete checkpoint, then killed at a random iteration
    assert at_random.resumed_from == during_write.complete_after, logs
    assert at_random.resumed_iteration == during_write.complete_after_iteration, logs
    assert at_random.killed, logs
    assert during_write.partial_file + ".rejected" in result.rejected_files  # set aside, not loaded

    # 3. resumed again from the newest complete checkpoint and ran to the end
    assert last.resumed_from == at_random.complete_after, logs
    assert last.resumed_iteration == at_random.complete_after_iteration, logs
    assert not last.killed and result.final_iteration == last.last_logged_iteration, logs
    assert result.leftover_tmp == []

    # nothing was lost past the last checkpoint, and the result is the uninterrupted run's
    assert result.max_abs_diff <= 1e-6, result.max_abs_diff
    assert {p.name for _, p in complete_checkpoints(tmp_path / f"{bundle}_chain" / "models", BUNDLES[bundle]["prefix"])}


def test_latest_checkpoint_falls_back_and_cleans(tmp_path, caplog):
    """Unit level: truncated newest file rejected (logged, moved aside), temp leftovers deleted, order by step."""
    for step in (4, 8):
        atomic_torch_save({"trainer": {"iteration": step}, "network": {"w": torch.ones(2) * step}}, tmp_path / f"seg_checkpoint_epoch={step}.pt")
    good = (tmp_path / "seg_checkpoint_epoch=8.pt").read_bytes()
    (tmp_path / "seg_checkpoint_epoch=12.pt").write_bytes(good[: len(good) // 2])  # a kill mid-write
    (tmp_path / ".seg_checkpoint_epoch=16.pt.abc123.tmp").write_bytes(good[:10])  # an atomic write's leftover
    torch.save({"network": {}}, tmp_path / "seg_checkpoint_epoch=20.pt")  # no trainer state: not resumable
    torch.save({"w": torch.zeros(1)}, tmp_path / "model.pt")  # best model: never a candidate
    with caplog.at_level("WARNING"):
        chosen = latest_checkpoint(tmp_path, prefix="seg")
    assert chosen == str(tmp_path / "seg_checkpoint_epoch=8.pt")
    assert "seg_checkpoint_epoch=12.pt" in caplog.text and "truncated or corrupt" in caplog.text
    assert "seg_checkpoint_epoch=20.pt" in caplog.text and "trainer" in caplog.text
    assert (tmp_path / "seg_checkpoint_epoch=12.pt.rejected").is_file() and not (tmp_path / "seg_checkpoint_epoch=12.pt").exists()
    assert not list(tmp_path.glob(".*.tmp"))
    assert latest_checkpoint(tmp_path / "missing") is None


def _batches_seen(resume_state: dict | None, stop_at: int | None = None, max_epochs: int = 3) -> tuple[list[list[int]], dict]:
    """Run an Ignite engine over a shuffled loader of 0..9 (batch 2; epochs re-seeded by EpochSeedHandler), optionally
    restored from ``resume_state`` with MidEpochResumeHandler; returns the batches seen and the final state dict."""
    from ignite.engine import Engine, Events

    from openus_monai.handlers import EpochSeedHandler, MidEpochResumeHandler

    loader = torch.utils.data.DataLoader(list(range(10)), batch_size=2, shuffle=True)
    seen: list[list[int]] = []
    engine = Engine(lambda e, batch: seen.append(batch.tolist()))
    if resume_state is not None:
        engine.add_event_handler(Events.STARTED, lambda e: e.load_state_dict(resume_state))  # as CheckpointLoader
    EpochSeedHandler(seed=7).attach(engine)
    MidEpochResumeHandler().attach(engine)
    if stop_at is not None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at), lambda e: e.terminate())
    engine.run(loader, max_epochs=max_epochs)
    return seen, engine.state_dict()


@pytest.mark.parametrize("stop_at", [3, 5, 12])  # inside epoch 1, at the end of epoch 1, inside epoch 3
def test_resume_inside_an_epoch_replays_only_the_rest_of_it(stop_at):
    uninterrupted, _ = _batches_seen(None)
    first, state = _batches_seen(None, stop_at=stop_at)
    assert first == uninterrupted[:stop_at]
    rest, _ = _batches_seen(dict(state))
    assert rest == uninterrupted[stop_at:]
