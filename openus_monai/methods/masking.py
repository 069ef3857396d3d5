"""The self-adaptive mask generator of OpenUS (the paper's ALP masking): a component of :class:`~openus_monai.methods.OpenUSMethod`."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from ignite import distributed as idist

from ..transforms.masking import random_block_mask, token_grid

__all__ = ["STRATEGIES", "LossMemory", "SelfAdaptiveMasking", "minmax"]

STRATEGIES = ("self_adaptive", "attention", "random_block")


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each row of ``[N, L]`` to ``[0, 1]`` (constant rows become 0)."""
    lo, hi = x.min(-1, keepdim=True).values, x.max(-1, keepdim=True).values
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def _cell_centres(n: int, device) -> torch.Tensor:
    return (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n


class LossMemory:
    """Each image's past reconstruction loss, on an ``R x R`` grid in source-image coordinates.

    Views are boxes ``(top, left, bottom, right, flipped)`` in fractions of the source image (see
    :class:`~openus_monai.transforms.MultiViewCropd`). :meth:`read` resamples an image's map into a
    view's cells (bilinear at the cell centres; cells never written fall back to a position-wise running
    mean over all images); :meth:`write` EMA-updates the source cells whose centres fall in masked cells of
    a view.

    Args:
        num_images: dataset size (images are keyed by their dataset index).
        resolution: ``R``.
        momentum: EMA momentum of an image's map (0 = keep only the newest loss).
    """

    def __init__(self, num_images: int, resolution: int = 16, momentum: float = 0.5) -> None:
        self.resolution, self.momentum = resolution, momentum
        self.maps = torch.zeros(num_images, resolution, resolution)
        self.seen = torch.zeros(num_images, resolution, resolution, dtype=torch.bool)
        self.running_mean = torch.zeros(resolution, resolution)
        self.running_seen = torch.zeros(resolution, resolution, dtype=torch.bool)

    def prior(self, index: torch.Tensor) -> torch.Tensor:
        """``[B, R, R]``: each image's map where seen, the running mean elsewhere."""
        index = index.cpu().long()
        return torch.where(self.seen[index], self.maps[index], self.running_mean)

    def read(self, index: torch.Tensor, boxes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Loss prior of each view's cells: ``index [B]``, ``boxes [B, V, 5]`` -> ``[B, V, h, w]``."""
        batch, views = boxes.shape[:2]
        boxes = boxes.float().cpu()
        prior = self.prior(index)[:, None].expand(-1, views, -1, -1).reshape(batch * views, 1, self.resolution, self.resolution)
        top, left, bottom, right, flipped = boxes.reshape(-1, 5).unbind(-1)
        vy, vx = _cell_centres(grid[0], "cpu"), _cell_centres(grid[1], "cpu")
        vx = torch.where(flipped[:, None] > 0.5, 1 - vx, vx)  # [BV, w]
        sy = top[:, None] + vy[None] * (bottom - top)[:, None]  # [BV, h]
        sx = left[:, None] + vx * (right - left)[:, None]  # [BV, w]
        sample_grid = torch.stack(torch.broadcast_tensors(sx[:, None, :], sy[:, :, None]), dim=-1) * 2 - 1
        out = F.grid_sample(prior, sample_grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.view(batch, views, *grid)

    def write(self, index: torch.Tensor, boxes: torch.Tensor, cell_loss: torch.Tensor, masks: torch.Tensor) -> None:
        """EMA-update the images' maps from the masked cells of their views.

        Args:
            index: ``[B]`` dataset indices.
            boxes: ``[B, V, 5]``.
            cell_loss: ``[B, V, h, w]`` per-cell reconstruction loss.
            masks: ``[B, V, h, w]`` bool, the cells that were masked (only those carry a loss).
        """
        index, boxes = index.cpu().long(), boxes.float().cpu()
        cell_loss, masks = cell_loss.float().cpu(), masks.cpu()
        _, views, h, w = masks.shape
        centres = _cell_centres(self.resolution, "cpu")
        for v in range(views):
            top, left, bottom, right, flipped = boxes[:, v].unbind(-1)
            vy = (centres[None] - top[:, None]) / (bottom - top)[:, None]  # [B, R]
            vx = (centres[None] - left[:, None]) / (right - left)[:, None]
            vx = torch.where(flipped[:, None] > 0.5, 1 - vx, vx)
            inside = ((vy >= 0) & (vy < 1))[:, :, None] & ((vx >= 0) & (vx < 1))[:, None, :]  # [B, R, R]
            iy = (vy.clamp(0, 1 - 1e-6) * h).long()[:, :, None].expand(-1, -1, self.resolution)
            ix = (vx.clamp(0, 1 - 1e-6) * w).long()[:, None, :].expand(-1, self.resolution, -1)
            flat = iy * w + ix
            value = cell_loss[:, v].flatten(1).gather(1, flat.flatten(1)).view_as(flat).float()
            hit = inside & masks[:, v].flatten(1).gather(1, flat.flatten(1)).view_as(flat)
            old, seen = self.maps[index], self.seen[index]
            updated = torch.where(seen, self.momentum * old + (1 - self.momentum) * value, value)
            self.maps[index] = torch.where(hit, updated, old)
            self.seen[index] = seen | hit
            counts = hit.sum(0)
            if counts.any():
                mean = (value * hit).sum(0) / counts.clamp_min(1)
                blended = torch.where(self.running_seen, self.momentum * self.running_mean + (1 - self.momentum) * mean, mean)
                self.running_mean = torch.where(counts > 0, blended, self.running_mean)
                self.running_seen |= counts > 0

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"maps": self.maps, "seen": self.seen, "running_mean": self.running_mean, "running_seen": self.running_seen}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            if getattr(self, key).shape != value.shape:
                raise ValueError(f"loss memory {key}: checkpoint {list(value.shape)} vs {list(getattr(self, key).shape)} (dataset size changed?)")
            setattr(self, key, value.detach().cpu().clone())  # the memory lives on the CPU whatever map_location was


class SelfAdaptiveMasking:
    """Masks for the global views from the Adaptive Learning Priority (ALP) of each cell.

    Per view: teacher attention ``AM`` and the student's loss prior ``L`` (from :class:`LossMemory`), each
    min-max normalised over the view's cells, give ``ALP = (1 - alpha) * AM + alpha * L``. Of ``N`` cells,
    ``m = ceil(ratio * N)`` are masked: the ``floor(r_t * m)`` of highest ALP, and ``m - floor(r_t * m)``
    drawn at random from the rest. ``alpha`` and ``r_t`` are given at every call; they come from the one
    schedule owner (:class:`~openus_monai.handlers.PretrainingSchedule`: alpha rising on a cosine, r_t
    linearly, i.e. easy to hard).

    The method calls :meth:`generate` before the student's forward, :meth:`record` after a good optimizer
    step and :meth:`rewind` after a skipped one. This object holds the loss memory and the random generator
    of the masks; the method checkpoints it (:meth:`state_dict`). Under DDP the recorded losses are gathered,
    so every rank holds the same state.

    Args:
        num_images: dataset size (images are keyed by their dataset index); None: taken from the first
            checkpoint loaded (:meth:`load_state_dict`).
        mask_ratio: fraction of cells masked.
        strategy: ``self_adaptive`` (ALP), ``attention`` (alpha = 0: attention only), ``random_block``
            (BEiT block masks; the paper's baseline).
        memory_resolution, memory_momentum: see :class:`LossMemory`.
        seed: seed of the random part of the masks.
    """

    def __init__(
        self,
        num_images: int | None = None,
        mask_ratio: float = 0.8,
        strategy: str = "self_adaptive",
        memory_resolution: int = 16,
        memory_momentum: float = 0.5,
        seed: int = 0,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if not 0 < mask_ratio <= 1:
            raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio}")
        self.num_images, self.mask_ratio, self.strategy = num_images, mask_ratio, strategy
        self.memory_resolution, self.memory_momentum = memory_resolution, memory_momentum
        self.generator = torch.Generator().manual_seed(seed)
        self.memory: LossMemory | None = LossMemory(num_images, memory_resolution, memory_momentum) if num_images else None
        self.last: dict[str, torch.Tensor] = {}  # the first view's maps of the last masks (for pictures)
        self._undo: tuple = (self.generator.get_state(), {})  # what :meth:`rewind` restores

    # -- masks ----------------------------------------------------------------------------------------------
    def effective_alpha(self, alpha: float) -> float:
        """The scheduled ``alpha``, or 0 for the ``attention`` strategy."""
        return 0.0 if self.strategy == "attention" else float(alpha)

    def mask_counts(self, n_cells: int, r_t: float) -> tuple[int, int]:
        """``(m, k)``: cells masked, and how many of them are chosen by ALP."""
        m = math.ceil(self.mask_ratio * n_cells)
        return m, math.floor(r_t * m)

    def priority(
        self, scores: torch.Tensor, boxes: torch.Tensor, index: torch.Tensor, grid: tuple[int, int], alpha: float
    ) -> dict[str, torch.Tensor]:
        """``AM``, ``L`` and ``ALP`` per cell, each ``[B, V, h, w]`` (see the class docstring)."""
        if self.memory is None:
            raise RuntimeError("SelfAdaptiveMasking needs num_images (or a loaded state) before the first masks")
        batch, views = scores.shape[:2]
        tokens = token_grid(scores.shape[-1], grid)
        am = scores.float().reshape(batch * views, 1, *tokens)
        if tokens != grid:
            am = F.interpolate(am, size=grid, mode="bilinear", align_corners=False)
        am = minmax(am.flatten(1)).view(batch, views, *grid)
        prior = self.memory.read(index, boxes, grid).to(am.device)
        prior = minmax(prior.flatten(2).flatten(0, 1)).view(batch, views, *grid)
        alpha = self.effective_alpha(alpha)
        return {"attention": am, "loss_prior": prior, "alp": (1 - alpha) * am + alpha * prior}

    @torch.no_grad()
    def generate(
        self, scores: torch.Tensor, boxes: torch.Tensor, index: torch.Tensor, grid: tuple[int, int], alpha: float, r_t: float
    ) -> torch.Tensor:
        """Masks for a batch of global views.

        Args:
            scores: teacher attention per token ``[B, V, L]`` (row-major, any grid resampled to ``grid``).
            boxes: view boxes ``[B, V, 5]``.
            index: dataset indices ``[B]``.
            grid: mask grid ``(h, w)`` (view size / cell size).
            alpha: weight of the loss prior in ALP.
            r_t: share of the masked cells chosen by ALP.

        Returns:
            ``[B, V, h, w]`` bool, exactly ``m = ceil(ratio * h * w)`` cells set in each view.
        """
        self._undo = (self.generator.get_state(), self.last)
        batch, views = scores.shape[:2]
        n_cells = grid[0] * grid[1]
        m, k = self.mask_counts(n_cells, r_t)
        rank, world = idist.get_rank(), idist.get_world_size()
        # Every rank draws the global batch's random numbers, so generator states stay identical across ranks.
        noise = torch.rand(world * batch * views, n_cells, generator=self.generator)[rank * batch * views : (rank + 1) * batch * views]
        if self.strategy == "random_block":
            seeds = torch.randint(0, 2**31 - 1, (world * batch * views,), generator=self.generator)[rank * batch * views :]
            masks = [random_block_mask(np.random.RandomState(int(s)), grid, m) for s in seeds[: batch * views]]
            self.last = {}
            return torch.from_numpy(np.stack(masks)).view(batch, views, *grid).to(scores.device)
        maps = self.priority(scores, boxes, index, grid, alpha)
        alp = maps["alp"].flatten(2).flatten(0, 1).cpu()  # [BV, N]
        chosen = torch.zeros_like(alp, dtype=torch.bool)
        if k > 0:
            chosen.scatter_(1, alp.topk(k, dim=1).indices, True)
        if m > k:
            keys = noise.masked_fill(chosen, -1.0)
            chosen.scatter_(1, keys.topk(m - k, dim=1).indices, True)
        masks = chosen.view(batch, views, *grid)
        self.last = {name: value[:1, :1].detach().cpu() for name, value in maps.items()} | {"mask": masks[:1, :1]}
        return masks.to(scores.device)

    @torch.no_grad()
    def record(self, cell_loss: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor, index: torch.Tensor) -> None:
        """Store the student's per-cell loss ``[B, V, h, w]`` of the masked cells ``masks [B, V, h, w]``."""
        tensors = [cell_loss.float(), masks, boxes.float().to(cell_loss.device), index.to(cell_loss.device)]
        if idist.get_world_size() > 1:
            tensors = [idist.all_gather(t) for t in tensors]
        self.memory.write(tensors[3], tensors[2], tensors[0], tensors[1])

    def rewind(self) -> None:
        """Undo the last :meth:`generate` (its step was skipped): the random generator and the last maps go back to
        what they were before it, so a skipped step leaves no trace."""
        generator, self.last = self._undo
        self.generator.set_state(generator)

    # -- checkpointing --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"generator": self.generator.get_state()}
        if self.memory is not None:
            state |= {f"memory.{k}": v for k, v in self.memory.state_dict().items()}
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"].cpu())
        memory = {k.removeprefix("memory."): v for k, v in state.items() if k.startswith("memory.")}
        if memory:
            if self.memory is None:
                self.num_images = memory["maps"].shape[0]
                self.memory = LossMemory(self.num_images, memory["maps"].shape[-1], self.memory_momentum)
            self.memory.load_state_dict(memory)
