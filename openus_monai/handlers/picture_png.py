"""Pictures as labelled PNG files: a row of named panels, each with its title, readable without TensorBoard.

Used by the pretraining picture handler to write, every epoch, the panels it logs to TensorBoard also as
``<output_dir>/pictures/<tag>_epoch<NNNN>.png``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_path

__all__ = ["OPENUS_PANEL_TITLES", "render_panels", "save_panels_png"]

#: titles of the OpenUS masking picture's six panels, in order
OPENUS_PANEL_TITLES: tuple[str, ...] = (
    "global view",
    "teacher attention",
    "student loss prior",
    "ALP (mask probability)",
    "chosen mask (white: masked)",
    "reconstruction",
)
_STRIP = 18  # pixels of the title strip above each panel
_GAP = 4  # pixels between panels


def _panel_to_uint8(panel: torch.Tensor | np.ndarray, min_side: int) -> np.ndarray:
    """``[H, W]``, ``[1, H, W]`` or ``[3, H, W]`` -> ``[H', W', 3]`` uint8, min-max scaled, enlarged (nearest) to
    at least ``min_side`` pixels on its shorter side."""
    x = torch.as_tensor(panel).detach().float().cpu()
    if x.ndim == 3 and x.shape[0] in (1, 3):
        x = x if x.shape[0] == 3 else x.expand(3, -1, -1)
    elif x.ndim == 2:
        x = x.expand(3, -1, -1)
    else:
        raise ValueError(f"a panel must be [H, W], [1, H, W] or [3, H, W], got {list(x.shape)}")
    x = torch.nan_to_num(x)
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
    scale = max(1, -(-min_side // min(x.shape[-2:])))  # ceil
    if scale > 1:
        x = x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def render_panels(panels: Mapping[str, torch.Tensor | np.ndarray], title: str | None = None, min_side: int = 128):
    """One RGB image: the panels side by side, each under its name, an optional title line above.

    Args:
        panels: name -> panel ``[H, W]``, ``[1, H, W]`` or ``[3, H, W]`` (each min-max scaled on its own).
        title: a line above the row (e.g. ``"epoch 3"``).
        min_side: small panels are enlarged (nearest) to this many pixels on their shorter side.

    Returns:
        a ``PIL.Image.Image`` (RGB).
    """
    from PIL import Image, ImageDraw

    if not panels:
        raise ValueError("no panels to render")
    arrays = [(name, _panel_to_uint8(p, min_side)) for name, p in panels.items()]
    height = max(a.shape[0] for _, a in arrays)
    width = sum(a.shape[1] for _, a in arrays) + _GAP * (len(arrays) - 1)
    top = _STRIP * (2 if title else 1)
    canvas = Image.new("RGB", (width, height + top), (32, 32, 32))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 3), title, fill=(255, 255, 255))
    x = 0
    for name, array in arrays:
        canvas.paste(Image.fromarray(array), (x, top))
        draw.text((x + 3, top - _STRIP + 3), name, fill=(255, 255, 255))
        x += array.shape[1] + _GAP
    return canvas


def save_panels_png(
    panels: Mapping[str, torch.Tensor | np.ndarray], path: str | os.PathLike, title: str | None = None, min_side: int = 128
) -> Path:
    """Write :func:`render_panels` to ``path`` (a PNG, written atomically; folders created).

    Returns:
        the path written.
    """
    with atomic_path(path) as tmp:
        render_panels(panels, title=title, min_side=min_side).save(tmp, format="PNG")
    return Path(path)
