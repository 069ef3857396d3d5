"""Label maps as palette PNGs: class indices in the pixels (for MONAI Label and training), colours for people.

A label map written as plain 8-bit gray with values 0/1 looks black in any viewer. A palette PNG keeps the
same indices as its pixel values (``numpy.asarray(PIL.Image.open(path))`` gives them back) and shows each
class in its own colour. The file carries a text chunk :data:`LABEL_MAP_KEY`, by which this project's
readers (:func:`~openus_monai.data.checked_readers.pil_pixel_mode`) keep the indices instead of expanding the
palette to RGB as they do for palette *pictures*.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io import atomic_path

__all__ = ["LABEL_MAP_KEY", "MASK_COLOURS", "is_label_map_png", "write_palette_png"]

#: PNG text chunk marking a palette PNG whose pixel values are class indices
LABEL_MAP_KEY = "openus_monai:label_map"
#: RGB colour of class 0 (background), 1 (lesion), 2, ...: black, red, green, blue, yellow, magenta, cyan
MASK_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
)


def _palette() -> list[int]:
    colours = list(MASK_COLOURS) + [(v, v, v) for v in range(len(MASK_COLOURS), 256)]  # further classes: gray
    return [c for rgb in colours for c in rgb]


def write_palette_png(labels: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a ``[H, W]`` label map of class indices ``0..255`` as a palette PNG (atomically).

    Args:
        labels: class indices, ``[H, W]``, any integer dtype.
        path: the ``.png`` file.

    Returns:
        the path written.
    """
    from PIL import Image, PngImagePlugin

    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError(f"expected a [H, W] label map of values 0..255, got shape {list(labels.shape)}")
    image = Image.fromarray(labels.astype(np.uint8), mode="L").convert("P")  # "L" -> "P": indices kept
    image.putpalette(_palette())
    info = PngImagePlugin.PngInfo()
    info.add_text(LABEL_MAP_KEY, "1")
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return Path(path)


def is_label_map_png(img) -> bool:
    """Whether an opened PIL image is a label map written by :func:`write_palette_png`."""
    return img.mode == "P" and str(getattr(img, "info", {}).get(LABEL_MAP_KEY, "")) == "1"
