"""Hausdorff distance that treats empty masks as what they are: undefined, not a warning per image."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from monai.metrics import HausdorffDistanceMetric

__all__ = ["EmptyAwareHausdorffDistanceMetric"]


class EmptyAwareHausdorffDistanceMetric(HausdorffDistanceMetric):
    """MONAI's ``HausdorffDistanceMetric``, computed only where both masks have foreground.

    The distance is undefined where the reference mask of a class is empty (a normal image): such entries
    are ``NaN``; where the reference has foreground and the prediction has none it is ``inf``. Neither is
    passed to MONAI, which would warn once per image (``the ground truth of class 1 is all 0``); means over
    images (``reduction``, :class:`~openus_monai.handlers.MetricsReport`) leave them out.

    Takes ``HausdorffDistanceMetric``'s arguments (``include_background``, ``percentile``, ``reduction``, ...).
    """

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        """Distances ``[B, C]`` (``C`` without background unless ``include_background``) of one-hot ``[B, C, H, W]`` inputs."""
        first = 0 if self.include_background else 1
        has_ref = y[:, first:].flatten(2).any(-1)  # [B, C']
        has_pred = y_pred[:, first:].flatten(2).any(-1)
        out = torch.full(has_ref.shape, float("nan"), dtype=torch.float, device=y_pred.device)
        out[has_ref & ~has_pred] = float("inf")
        rows = (has_ref & has_pred).any(1)
        if rows.any():
            with warnings.catch_warnings():
                # MONAI 1.6's own get_edge_surface_distance passes the deprecated argument; nothing to fix here
                warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
                # rows kept can still hold a class empty in one mask (multi-class): those values are replaced below
                warnings.filterwarnings("ignore", message=".* is all 0, this may result in nan/inf distance")
                computed = super()._compute_tensor(y_pred[rows], y[rows], **kwargs).float()
            both = has_ref[rows] & has_pred[rows]
            out[rows] = torch.where(both, computed.to(out.device), out[rows])
        return out
