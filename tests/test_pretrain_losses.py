"""iBOT loss, reconstruction loss (against the original's vectors), heads, teacher EMA, schedules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from openus_monai.handlers import PretrainingSchedule, TeacherEMAHandler, cosine, warmup_cosine
from openus_monai.losses import IBOTLoss, masked_reconstruction_loss, sinkhorn_knopp
from openus_monai.networks import VMamba, load_openus_checkpoint
from openus_monai.networks.heads import IBOTHead, ReconstructionHead
from openus_monai.methods import OpenUSMethod
from openus_monai.networks.pretrain import OpenUSMetaArch

from _helpers import REFERENCE


def test_ibot_class_term_hand_computed():
    loss = IBOTLoss(out_dim=2, student_temp=1.0)
    t = torch.tensor([[[0.75, 0.25]], [[0.5, 0.5]]])  # [G=2, B=1, K=2]
    s = torch.log(torch.tensor([[[0.5, 0.5]], [[0.9, 0.1]], [[0.2, 0.8]]]))  # [V=3, B=1, K]: log-probs as logits
    cls, _ = loss(t, torch.zeros(2, 1, 1, 2), s, torch.zeros(2, 1, 1, 2), torch.zeros(2, 1, 1, dtype=torch.bool), n_global=2)
    ce = lambda p, q: -(torch.tensor(p) * torch.log(torch.tensor(q))).sum()  # noqa: E731
    expected = (ce([0.75, 0.25], [0.9, 0.1]) + ce([0.75, 0.25], [0.2, 0.8]) + ce([0.5, 0.5], [0.5, 0.5]) + ce([0.5, 0.5], [0.2, 0.8])) / 4
    torch.testing.assert_close(cls, expected)


def test_ibot_patch_term_ignores_unmasked_tokens():
    loss = IBOTLoss(out_dim=3)
    t_patch = F.softmax(torch.randn(2, 2, 4, 3), -1)
    s_patch = torch.randn(2, 2, 4, 3)
    masks = torch.tensor([[[1, 0, 1, 0], [0, 0, 0, 0]], [[1, 1, 1, 1], [0, 1, 0, 0]]], dtype=torch.bool)
    args = (torch.full((2, 2, 3), 1 / 3), t_patch, torch.zeros(3, 2, 3))
    _, patch = loss(*args, s_patch, masks, n_global=2)
    changed = s_patch.clone()
    changed[~masks] = 100 * torch.randn_like(changed[~masks])  # anything on unmasked tokens
    _, patch2 = loss(*args, changed, masks, n_global=2)
    torch.testing.assert_close(patch, patch2)
    per_token = -(t_patch * F.log_softmax(s_patch / 0.1, -1)).sum(-1)
    images = [per_token[g, b][masks[g, b]].mean() for g in range(2) for b in range(2) if masks[g, b].any()]
    torch.testing.assert_close(patch, torch.stack(images).mean())


def test_centre_update_and_teacher_sharpening():
    loss = IBOTLoss(out_dim=4, center_momentum=0.9)
    cls, patch = torch.randn(6, 4), torch.randn(6, 5, 4)
    loss.update_center(cls, patch)  # first update: the zero centre takes the batch mean whole
    torch.testing.assert_close(loss.center, cls.mean(0, keepdim=True))
    torch.testing.assert_close(loss.center_patch, patch.mean((0, 1))[None, None])
    cls2, patch2 = torch.randn(6, 4), torch.randn(6, 5, 4)
    loss.update_center(cls2, patch2)  # then the EMA
    torch.testing.assert_close(loss.center, 0.9 * cls.mean(0, keepdim=True) + 0.1 * cls2.mean(0, keepdim=True))
    torch.testing.assert_close(loss.center_patch, (0.9 * patch.mean((0, 1)) + 0.1 * patch2.mean((0, 1)))[None, None])
    probs, _ = loss.teacher_probs(cls, patch, 0.04, 0.07)
    torch.testing.assert_close(probs, F.softmax((cls - loss.center) / 0.04, -1))


def _sinkhorn_exp_domain(logits, temp, n_iterations):
    """DINOv2's formulation (exp domain, float64): the reference for the log-domain one."""
    q = torch.exp(logits.double() / temp).t()  # [K, N]
    q /= q.sum()
    for _ in range(n_iterations):
        q /= q.sum(1, keepdim=True) * q.shape[0]
        q /= q.sum(0, keepdim=True) * q.shape[1]
    return (q * q.shape[1]).t()


@pytest.mark.parametrize("n_iterations", [1, 3, 10])
def test_sinkhorn_knopp_equals_the_exp_domain_formulation(n_iterations):
    logits = torch.randn(24, 16)
    torch.testing.assert_close(sinkhorn_knopp(logits, 0.1, n_iterations).double(), _sinkhorn_exp_domain(logits, 0.1, n_iterations), rtol=1e-4, atol=1e-6)


def test_sinkhorn_knopp_spreads_a_batch_that_one_prototype_takes():
    """The collapse phase the monitor warned of (one prototype wins every image), at the CPU presets' 0.01."""
    torch.manual_seed(0)
    logits = 0.05 * torch.randn(64, 32)
    logits[:, 0] += 0.95  # every image prefers prototype 0, by about 95 temperatures
    softmax = F.softmax(logits / 0.01, -1)
    assert (softmax.argmax(-1) == 0).all()
    targets = sinkhorn_knopp(logits, 0.01)
    assert torch.isfinite(targets).all()  # exp(1 / 0.01) overflows float32 in the exp domain
    torch.testing.assert_close(targets.sum(-1), torch.ones(64))
    share = targets.sum(0) / 64  # each prototype's share of the batch
    assert share.max() < 0.1 and share.min() > 0.01, share  # 1 / 32 each after full convergence
    balanced = sinkhorn_knopp(logits, 0.01, n_iterations=100).sum(0) / 64
    torch.testing.assert_close(balanced, torch.full((32,), 1 / 32), rtol=1e-3, atol=1e-5)


def _sinkhorn_rank(rank: int, init: str, logits: torch.Tensor, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        torch.save(sinkhorn_knopp(logits.chunk(2)[rank], 0.01), f"{out}{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_sinkhorn_knopp_under_ddp_equals_one_process_on_the_whole_batch(tmp_path):
    """The prototypes' shares are taken over the global batch: two gloo processes, half the rows each."""
    logits = torch.randn(16, 8)
    init = f"file://{tmp_path / 'store'}"
    torch.multiprocessing.spawn(_sinkhorn_rank, args=(init, logits, str(tmp_path / "rank")), nprocs=2)
    halves = torch.cat([torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)])
    torch.testing.assert_close(halves, sinkhorn_knopp(logits, 0.01))


def test_ibot_sinkhorn_knopp_centring_of_class_and_patch_targets():
    loss = IBOTLoss(out_dim=8, centering="sinkhorn_knopp")
    cls, patch = torch.randn(6, 8), torch.randn(6, 5, 8)
    probs, patch_probs = loss.teacher_probs(cls, patch, 0.04, 0.07)
    torch.testing.assert_close(probs, sinkhorn_knopp(cls, 0.04))
    torch.testing.assert_close(patch_probs, sinkhorn_knopp(patch.reshape(30, 8), 0.07).view(6, 5, 8))  # over all tokens
    with pytest.raises(ValueError, match="centering must be one of"):
        IBOTLoss(out_dim=8, centering="median")


def test_reconstruction_matches_original_vectors():
    path = REFERENCE / "openus_vmamba_tiny_vectors.pt"
    if not path.is_file():
        pytest.skip(f"reference vectors not found at {path}")
    ref = torch.load(path, weights_only=True)
    enc = VMamba(depths=ref["config"]["depths"], dims=ref["config"]["dims"])
    load_openus_checkpoint(enc, ref["state_dict"])
    head = ReconstructionHead(enc.num_features, 3, 32)
    head.proj.load_state_dict({"weight": ref["state_dict"]["decoder.0.weight"], "bias": ref["state_dict"]["decoder.0.bias"]})
    enc.train()
    with torch.no_grad():
        maps, _ = enc.forward_features(ref["input"], ref["mask"])
        loss, cells = masked_reconstruction_loss(head(maps[-1]), ref["input"], ref["mask"])
    torch.testing.assert_close(loss, ref["rec_loss"], rtol=0, atol=1e-4)
    torch.testing.assert_close(cells.flatten(1), ref["recon_importance"][:, 0], rtol=0, atol=1e-4)


def test_reconstruction_without_masked_cells_is_zero():
    loss, cells = masked_reconstruction_loss(torch.randn(2, 1, 64, 64), torch.randn(2, 1, 64, 64), torch.zeros(2, 2, 2, dtype=torch.bool))
    assert loss.item() == 0 and not cells.any()


def test_heads_shapes():
    head = IBOTHead(16, out_dim=10, hidden_dim=8, bottleneck_dim=4)
    cls, patch = head(torch.randn(2, 5, 16))
    assert cls.shape == (2, 10) and patch.shape == (2, 4, 10)
    assert ReconstructionHead(16, 1, 32)(torch.randn(2, 16, 2, 3)).shape == (2, 1, 64, 96)


def test_teacher_ema_and_eval_mode():
    net = OpenUSMethod(VMamba(depths=(1, 1, 1, 1), dims=8, drop_path_rate=0.5), out_dim=16, hidden_dim=8, bottleneck_dim=4)
    assert isinstance(net, OpenUSMetaArch)  # the networks' container, with the method's losses and state added
    net.train()
    assert not net.teacher.training and net.student.training
    assert all(not p.requires_grad for p in net.teacher.parameters())
    with torch.no_grad():
        for p in net.student.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in net.teacher.state_dict().items()}
    net.ema.update(0.9)
    student = dict(net.student.named_parameters())
    for name, p in net.teacher.named_parameters():
        torch.testing.assert_close(p, 0.9 * before[name] + 0.1 * student[name])
    schedule = PretrainingSchedule(lr=1.0, teacher_momentum=0.996)
    assert schedule(10, 10, 1)["teacher_momentum"] == pytest.approx(1.0)
    assert schedule(1, 10, 1)["teacher_momentum"] == pytest.approx(0.996)


def test_teacher_ema_handler_reads_the_scheduled_momentum():
    net = OpenUSMetaArch(VMamba(depths=(1, 1, 1, 1), dims=8), out_dim=16, hidden_dim=8, bottleneck_dim=4)
    ema = TeacherEMAHandler(net.student, net.teacher)
    with torch.no_grad():
        for p in net.student.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in net.teacher.named_parameters()}

    class Engine:
        class state:
            output = [{"loss": 1.0, "skipped": 1.0, "teacher_momentum": 0.5}]

    ema(Engine())  # a skipped step leaves the teacher alone
    assert all(torch.equal(p, before[k]) for k, p in net.teacher.named_parameters())
    Engine.state.output = [{"loss": 1.0, "teacher_momentum": 0.5}]
    ema(Engine())
    student = dict(net.student.named_parameters())
    for name, p in net.teacher.named_parameters():
        torch.testing.assert_close(p, 0.5 * before[name] + 0.5 * student[name])


def test_schedule_functions():
    assert cosine(0.1, 0.9, 0.0) == pytest.approx(0.1) and cosine(0.1, 0.9, 1.0) == pytest.approx(0.9)
    assert warmup_cosine(1.0, 0.0, 1, 100, 10) == pytest.approx(0.0)
    assert warmup_cosine(1.0, 0.0, 10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(1.0, 0.0, 100, 100, 10) == pytest.approx(0.0)
    assert 0 < warmup_cosine(1.0, 0.0, 55, 100, 10) < 1 and not math.isnan(warmup_cosine(1.0, 0.0, 1, 1, 0))
