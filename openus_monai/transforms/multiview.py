"""Multi-crop views for self-supervised pretraining, each with the box it was cut from."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import GaussianSmooth, MapTransform, Randomizable
from monai.utils import convert_to_tensor

__all__ = ["MultiViewCropd", "ViewAugmentation", "sample_crop_box"]


def sample_crop_box(
    rng: np.random.RandomState, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """A random-resized-crop box ``(top, left, h, w)`` covering ``scale`` of the area at aspect ``ratio``.

    Falls back to the largest centred box of an in-range aspect after 10 tries, as is customary.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.randint(0, height - h + 1)), int(rng.randint(0, width - w + 1)), h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


class ViewAugmentation:
    """Photometric augmentation of one view ``[C, H, W]`` in ``[0, 1]``, each at its own probability.

    Horizontal flip, brightness/contrast jitter, Gaussian blur (MONAI ``GaussianSmooth``), gamma
    ("exposure"). Returns the view and whether it was flipped (so maps can be carried back).
    """

    def __init__(
        self,
        flip_prob: float = 0.5,
        jitter_prob: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        blur_prob: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        gamma_prob: float = 0.2,
        gamma_range: tuple[float, float] = (0.7, 1.5),
    ) -> None:
        self.flip_prob, self.jitter_prob, self.blur_prob, self.gamma_prob = flip_prob, jitter_prob, blur_prob, gamma_prob
        self.brightness, self.contrast, self.blur_sigma, self.gamma_range = brightness, contrast, blur_sigma, gamma_range

    def __call__(self, view: torch.Tensor, rng: np.random.RandomState) -> tuple[torch.Tensor, bool]:
        flip = bool(rng.rand() < self.flip_prob)
        if flip:
            view = view.flip(-1)
        if rng.rand() < self.jitter_prob:
            view = view * rng.uniform(1 - self.brightness, 1 + self.brightness)
            mean = view.mean()
            view = (view - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean
            view = view.clamp(0, 1)
        if rng.rand() < self.blur_prob:
            view = GaussianSmooth(sigma=float(rng.uniform(*self.blur_sigma)))(view)
        if rng.rand() < self.gamma_prob:
            view = view.clamp_min(0) ** float(rng.uniform(*self.gamma_range))
        return convert_to_tensor(view, dtype=torch.float32, track_meta=False), flip


class MultiViewCropd(Randomizable, MapTransform):
    """From one image, ``n_global`` global and ``n_local`` local random-resized, augmented views.

    Adds to the data dictionary (``V`` views of size ``S``):
    ``global_views`` ``[V_g, C_out, S_g, S_g]``, ``local_views`` ``[V_l, C_out, S_l, S_l]``,
    ``global_boxes`` / ``local_boxes`` ``[V, 5]`` float: ``(top, left, bottom, right)`` as fractions of
    the source image, and ``flipped`` (1.0 / 0.0). A source point ``(y, x)`` (fractions) lies in the
    view at ``((y - top) / (bottom - top), (x - left) / (right - left))``, the second mirrored as
    ``1 - x'`` when flipped.

    Args:
        keys: the image key (one), holding ``[C, H, W]`` intensities in ``[0, 1]`` (C = 1; RGB(A) is averaged to gray).
        n_global, global_size, global_scale: count, output size and area fraction range of global views.
        n_local, local_size, local_scale: the same for local views.
        out_channels: 1, or 3 (gray repeated), as the encoder expects.
        global_aug, local_aug: :class:`ViewAugmentation` for each kind (defaults: blur always on the first
            global view and rarely on the second, as in DINO/iBOT, is up to the caller).
        prefix: output keys are ``{prefix}global_views`` etc.
    """

    def __init__(
        self,
        keys: KeysCollection,
        n_global: int = 2,
        global_size: int = 224,
        global_scale: Sequence[float] = (0.14, 1.0),
        n_local: int = 8,
        local_size: int = 96,
        local_scale: Sequence[float] = (0.05, 0.4),
        out_channels: int = 1,
        global_aug: ViewAugmentation | None = None,
        local_aug: ViewAugmentation | None = None,
        prefix: str = "",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if out_channels not in (1, 3):
            raise ValueError(f"out_channels must be 1 or 3, got {out_channels}")
        self.n_global, self.global_size, self.global_scale = n_global, global_size, tuple(global_scale)
        self.n_local, self.local_size, self.local_scale = n_local, local_size, tuple(local_scale)
        self.out_channels, self.prefix = out_channels, prefix
        self.global_aug = global_aug or ViewAugmentation()
        self.local_aug = local_aug or ViewAugmentation()

    def randomize(self, data=None) -> None:  # randomness is drawn per view in __call__
        pass

    def _views(self, image: torch.Tensor, n: int, size: int, scale, aug: ViewAugmentation) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = image.shape[-2:]
        if n == 0:
            return torch.zeros(0, self.out_channels, size, size), torch.zeros(0, 5)
        views, boxes = [], []
        for _ in range(n):
            top, left, h, w = sample_crop_box(self.R, height, width, scale)
            crop = image[None, :, top : top + h, left : left + w]
            view = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
            view, flipped = aug(view.clamp(0, 1), self.R)
            views.append(view.expand(self.out_channels, -1, -1) if view.shape[0] == 1 else view)
            boxes.append([top / height, left / width, (top + h) / height, (left + w) / width, float(flipped)])
        return torch.stack(views), torch.tensor(boxes, dtype=torch.float32)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = convert_to_tensor(d[key], dtype=torch.float32, track_meta=False)
            if image.ndim != 3:
                raise ValueError(f"MultiViewCropd expects [C, H, W] under {key!r}, got {list(image.shape)} ({d.get('image_meta_dict', {}).get('filename_or_obj', '')})")
            if image.shape[0] in (3, 4):  # RGB(A): luminance-free gray is enough for B-mode
                image = image[:3].mean(0, keepdim=True)
            elif image.shape[0] == 2:  # gray + alpha
                image = image[:1]
            for kind, n, size, scale, aug in (
                ("global", self.n_global, self.global_size, self.global_scale, self.global_aug),
                ("local", self.n_local, self.local_size, self.local_scale, self.local_aug),
            ):
                views, boxes = self._views(image, n, size, scale, aug)
                d[f"{self.prefix}{kind}_views"] = views.contiguous()
                d[f"{self.prefix}{kind}_boxes"] = boxes
        return d
