"""Grayscale 2D images: any channel-first 2D image (gray, gray + alpha, RGB, RGBA) as one gray channel."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from ..data.checked_readers import source_path
from ..data.validation import DEFAULT_MIN_SIZE, InvalidImageError, check_array

__all__ = ["EnsureGray2Dd", "squeeze_trailing", "to_gray_2d"]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights, as PIL's convert("L")


def squeeze_trailing(x: torch.Tensor, spatial_dims: int = 2) -> torch.Tensor:
    """Drop singleton spatial dims of a channel-first array down to ``[C, H, W]``: trailing ones (a 2D NIfTI
    stored as ``H x W x 1``), then leading ones (a one-slice DICOM read as ``[C, 1, H, W]``)."""
    while x.ndim > spatial_dims + 1 and x.shape[-1] == 1:
        x = x.squeeze(-1)
    while x.ndim > spatial_dims + 1 and x.shape[1] == 1:
        x = x.squeeze(1)
    return x


def to_gray_2d(img: torch.Tensor, name: str = "<in memory>") -> torch.Tensor:
    """A channel-first image as one grayscale channel ``[1, H, W]``.

    Accepts ``[1, H, W]`` (returned as is), ``[2, H, W]`` (gray + alpha: the gray channel), ``[3, H, W]``
    (RGB) and ``[4, H, W]`` (RGBA), converted with the BT.601 luma weights; trailing singleton spatial
    dims (a 2D NIfTI stored as ``H x W x 1``, a one-slice DICOM) are dropped first.

    Raises:
        InvalidImageError: (a ``ValueError``) the image is not 2D, or has another number of channels (names
            the file).
    """
    img = squeeze_trailing(img)
    if img.ndim != 3:
        raise InvalidImageError(name, f"expected a 2D image, got an array of shape {list(img.shape)} (channel first)")
    channels = img.shape[0]
    if channels == 1:
        return img
    if channels == 2:
        return img[:1]
    if channels in (3, 4):
        weights = torch.tensor(_LUMA, dtype=torch.float32, device=img.device).view(3, 1, 1)
        gray = (img[:3].float() * weights).sum(0, keepdim=True)
        return gray.to(img.dtype) if img.dtype.is_floating_point else gray
    raise InvalidImageError(name, f"cannot make a grayscale image from {channels} channels (shape {list(img.shape)})")


class EnsureGray2Dd(MapTransform):
    """Make each ``keys`` image a channel-first grayscale 2D image ``[1, H, W]`` (see :func:`to_gray_2d`),
    after checking the decoded values (:func:`~openus_monai.data.validation.check_array`).

    Run after ``LoadImaged(..., ensure_channel_first=True)``. Metadata is kept.

    Args:
        keys: image keys.
        min_size: refuse images with a side shorter than this.
        allow_missing_keys: skip absent keys.

    Raises:
        InvalidImageError: NaN or Inf values, a side below ``min_size``, not 2D, or an unusable number of
            channels (names the file).
    """

    def __init__(self, keys: KeysCollection = "image", min_size: int = DEFAULT_MIN_SIZE, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.min_size = int(min_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            name = source_path(d[key])
            check_array(d[key], name, self.min_size)
            d[key] = to_gray_2d(d[key], name)
        return d
