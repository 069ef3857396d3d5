"""How informative are an OpenUS checkpoint's iBOT targets? Entropies of the teacher's class and patch targets.

Builds the pretraining bundle's network (``train.json`` + a preset), loads a pretraining checkpoint (its
``network`` entry), takes the monitor's probe batch (the first ``--images`` training images, whole, resized to
``global_size``) and, for each teacher temperature, prints what :func:`~openus_monai.metrics.collapse_diagnostics`
says of the teacher's class targets ``[B, K]`` and patch targets ``[B * L, K]`` (entropy / ln K, largest prototype
share), and the student's patch cross-entropy against those targets on the same, unmasked images split into
the targets' own entropy (the floor of the patch term) and the KL above it (what the student still has to learn).
A patch target entropy near ln K means the masked-patch term is near ln K whatever the student does.

    PYTHONPATH=$PWD python benchmarks/probe_teacher_targets.py runs/pretrain_small/models/pretrain_final.pt \
        --dataset_dir runs/corpus --presets small --temps 0.01 0.04 0.07
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser

from openus_monai.metrics import collapse_diagnostics

CONFIGS = "bundles/openus_pretrain/configs"


def load_method(checkpoint: str, dataset_dir: str, presets: list[str], images: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """The bundle's ``network`` with the checkpoint's weights (eval mode) and the monitor's probe batch ``[B, C, H, W]``."""
    parser = ConfigParser()
    parser.read_config([f"{CONFIGS}/train.json", *(f"{CONFIGS}/{p}.json" for p in presets)])
    parser.update({"bundle_root": "bundles/openus_pretrain", "dataset_dir": dataset_dir, "monitor_probe_size": images})
    method = parser.get_parsed_content("network")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    method.load_state_dict(state.get("network", state))
    return method.eval(), parser.get_parsed_content("monitor#probe_images")


@torch.no_grad()
def target_table(method: torch.nn.Module, images: torch.Tensor, temps: list[float]) -> list[dict[str, float]]:
    """One row per teacher temperature: class and patch target diagnostics, the student's patch CE, floor and KL (nats)."""
    _, s_patch, _ = method.student.encode(images, None)
    log_student = F.log_softmax(s_patch.float().flatten(0, 1) / method.ibot_loss.student_temp, dim=-1)  # [B * L, K]
    rows = []
    for temp in temps:
        targets = method.teacher_targets(images, temp)
        cls, patch_probs = collapse_diagnostics(targets["class"]), targets["patch"]
        patch = collapse_diagnostics(patch_probs)
        ce = float(-(patch_probs * log_student).sum(-1).mean())
        rows.append({"temp": temp, "cls_entropy_ratio": cls["entropy_ratio"], "cls_max_share": cls["max_prototype_share"],
                     "patch_entropy_ratio": patch["entropy_ratio"], "patch_max_share": patch["max_prototype_share"],
                     "patch_ce": ce, "patch_floor": patch["entropy"], "patch_kl": ce - patch["entropy"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a pretraining checkpoint (pretrain_final.pt or pretrain_checkpoint_*.pt)")
    parser.add_argument("--dataset_dir", required=True, help="the run's dataset_dir (the probe batch comes from it)")
    parser.add_argument("--presets", nargs="+", default=["small"],
                        help="the configs the run merged after train.json, relative to configs/ without .json (e.g. recipes/openus recipes/openus_cpu)")
    parser.add_argument("--images", type=int, default=64, help="probe images")
    parser.add_argument("--temps", type=float, nargs="+", default=[0.01, 0.04, 0.07], help="teacher temperatures")
    args = parser.parse_args()
    torch.manual_seed(0)
    method, images = load_method(args.checkpoint, args.dataset_dir, args.presets, args.images)
    rows = target_table(method, images, args.temps)
    k = method.ibot_loss.center.shape[-1]
    print(f"{args.checkpoint}: {len(images)} probe images {tuple(images.shape[-2:])}, K = {k}, ln K = {math.log(k):.3f}")
    print("| teacher T | class H / ln K | class largest share | patch H / ln K | patch largest share | student patch CE | floor (target H) | KL |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['temp']} | {r['cls_entropy_ratio']:.3f} | {r['cls_max_share']:.2f} | {r['patch_entropy_ratio']:.3f} | "
              f"{r['patch_max_share']:.2f} | {r['patch_ce']:.3f} | {r['patch_floor']:.3f} | {r['patch_kl']:.3f} |")


if __name__ == "__main__":
    main()
