"""MAE's loss: mean squared error on the masked patches only, optionally against per-patch normalised pixels."""

from __future__ import annotations

import torch

__all__ = ["masked_patch_loss", "normalise_patches"]


def normalise_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each patch's pixels minus their mean, over ``sqrt(var + eps)`` (MAE's ``norm_pix_loss`` target).

    Args:
        patches: ``[B, L, P]`` (see :func:`~openus_monai.transforms.patchify`).

    Returns:
        ``[B, L, P]``; a constant patch becomes exactly zero.
    """
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True, unbiased=True)
    constant = patches.amax(dim=-1, keepdim=True) == patches.amin(dim=-1, keepdim=True)
    centred = torch.where(constant, torch.zeros_like(patches), patches - mean)  # exact zero, not the mean's rounding error
    return centred / (var + eps).sqrt()


def masked_patch_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, normalise: bool = True) -> torch.Tensor:
    """Mean over masked patches of the per-patch mean squared error (MAE).

    Args:
        prediction: predicted pixels ``[B, L, P]`` (every patch; only masked ones count).
        target: the image's patches ``[B, L, P]``.
        mask: ``[B, L]`` bool, True where masked.
        normalise: regress per-patch normalised pixels (:func:`normalise_patches`).

    Returns:
        a 0-dim float32 tensor; 0 if nothing is masked.
    """
    target = target.float()
    if normalise:
        target = normalise_patches(target)
    per_patch = (prediction.float() - target).square().mean(dim=-1)  # [B, L]
    weights = mask.float()
    return (per_patch * weights).sum() / weights.sum().clamp_min(1.0)
