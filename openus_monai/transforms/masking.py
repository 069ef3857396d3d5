"""BEiT-style block-wise random masks on a grid of cells."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

__all__ = ["RandomBlockMaskd", "cell_masks_to_tokens", "random_block_mask", "token_grid"]


def random_block_mask(
    rng: np.random.RandomState,
    grid: tuple[int, int],
    n_masked: int,
    min_block: int = 4,
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
) -> np.ndarray:
    """Mask about ``n_masked`` cells of ``grid`` with random rectangular blocks (BEiT's procedure).

    Blocks of random area (``min_block`` cells up to what is still missing) and log-uniform aspect are
    placed at random; a block counts only the cells it newly covers, and ten placements without progress
    end the attempt. Returns a ``[h, w]`` bool array with at most ``n_masked`` cells set (usually exactly).
    """
    height, width = grid
    mask = np.zeros(grid, dtype=bool)
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    n_masked = min(n_masked, height * width)
    count = 0
    while count < n_masked:
        missing = n_masked - count
        gained = 0
        for _ in range(10):
            area = rng.uniform(min(min_block, missing), missing)
            ratio = math.exp(rng.uniform(*log_aspect))
            h = int(round(math.sqrt(area * ratio)))
            w = int(round(math.sqrt(area / ratio)))
            if 0 < h <= height and 0 < w <= width:
                top, left = rng.randint(0, height - h + 1), rng.randint(0, width - w + 1)
                block = mask[top : top + h, left : left + w]
                new = h * w - int(block.sum())
                if 0 < new <= missing:
                    block[...] = True
                    gained = new
                    break
        if gained == 0:
            break
        count += gained
    return mask


def token_grid(n_tokens: int, grid: tuple[int, int]) -> tuple[int, int]:
    """The ``(h, w)`` grid of ``n_tokens`` encoder tokens with the aspect of the mask ``grid``.

    Raises:
        ValueError: when ``n_tokens`` does not form such a grid.
    """
    scale = math.sqrt(n_tokens / (grid[0] * grid[1]))
    shape = (round(grid[0] * scale), round(grid[1] * scale))
    if shape[0] * shape[1] != n_tokens:
        raise ValueError(f"{n_tokens} tokens do not form a grid with the aspect of the mask grid {grid}")
    return shape


def cell_masks_to_tokens(masks: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Cell masks ``[N, h, w]`` on the encoder's token grid, flattened: ``[N, n_tokens]`` bool (nearest
    resampling when the cell grid and the token grid differ)."""
    n, h, w = masks.shape
    if h * w == n_tokens:
        return masks.flatten(1)
    size = token_grid(n_tokens, (h, w))
    return F.interpolate(masks[:, None].float(), size=size, mode="nearest")[:, 0].bool().flatten(1)


class RandomBlockMaskd(Randomizable, MapTransform):
    """Block masks for a stack of views ``[V, C, H, W]``: adds ``{key}_masks`` ``[V, H / cell, W / cell]`` bool.

    Each view is masked with probability ``prob`` at a ratio drawn uniformly from ``ratio`` (a float or a
    ``(min, max)`` range), as iBOT does; other views get an empty mask.

    Args:
        keys: keys of view stacks (e.g. ``"local_views"``).
        cell: mask cell size in pixels (32 = one last-stage token of the encoder).
        ratio: masked fraction of the cells, or a range to draw it from.
        prob: probability that a view is masked at all.
        min_block: minimum block area in cells.
        aspect: range of block aspect ratios.
    """

    def __init__(
        self,
        keys: KeysCollection,
        cell: int = 32,
        ratio: float | Sequence[float] = (0.1, 0.5),
        prob: float = 0.5,
        min_block: int = 1,
        aspect: Sequence[float] = (0.3, 1 / 0.3),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.cell, self.prob, self.min_block, self.aspect = cell, prob, min_block, tuple(aspect)
        self.ratio = (float(ratio), float(ratio)) if isinstance(ratio, (int, float)) else tuple(ratio)

    def randomize(self, data=None) -> None:
        pass

    def masks_for(self, n_views: int, grid: tuple[int, int]) -> torch.Tensor:
        masks = np.zeros((n_views, *grid), dtype=bool)
        cells = grid[0] * grid[1]
        for v in range(n_views):
            if self.R.rand() < self.prob:
                n = int(round(self.R.uniform(*self.ratio) * cells))
                masks[v] = random_block_mask(self.R, grid, n, self.min_block, self.aspect)
        return torch.from_numpy(masks)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            views = d[key]
            height, width = views.shape[-2:]
            if height % self.cell or width % self.cell:
                raise ValueError(f"{key}: view size {height} x {width} is not a multiple of the mask cell {self.cell}")
            d[f"{key.removesuffix('_views')}_masks"] = self.masks_for(views.shape[0], (height // self.cell, width // self.cell))
        return d
