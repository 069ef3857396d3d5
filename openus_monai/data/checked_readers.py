"""Image readers that refuse invalid files before decoding, for every bundle (pretraining, segmentation,
classification) and MONAI Label.

MONAI reads; what it lacks, and is written here, is: readers that refuse invalid files from their header
before decoding (a 20000x20000 PNG is never decoded), read palette images through their palette, and turn
a decoding failure into an :class:`~openus_monai.data.validation.InvalidImageError` naming the file
(:func:`image_readers`), plus the small file facts the transforms and reports share (:func:`source_path`,
:func:`is_nifti`).
"""

from __future__ import annotations

import os
from typing import Any

from monai.data import ITKReader, NibabelReader, PILReader
from monai.utils import optional_import

from .palette import is_label_map_png
from .validation import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIZE, InvalidImageError, check_image

__all__ = [
    "CheckedITKReader",
    "CheckedNibabelReader",
    "CheckedPILReader",
    "image_readers",
    "is_nifti",
    "pil_pixel_mode",
    "source_path",
]


def source_path(x: Any, default: str = "<in memory>") -> str:
    """The file a MONAI ``MetaTensor`` was loaded from (``meta["filename_or_obj"]``), else ``default``."""
    meta = getattr(x, "meta", None) or {}
    name = meta.get("filename_or_obj")
    if isinstance(name, (list, tuple)):  # batched meta
        name = name[0] if name else None
    return str(name) if name else default


def is_nifti(path: str | os.PathLike) -> bool:
    """Whether the file name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).lower().endswith((".nii", ".nii.gz"))


def pil_pixel_mode(img: Any) -> Any:
    """A PIL image in a mode whose pixel array is the picture (``PILReader(converter=...)``).

    Palette images (``P``, ``PA``) become RGB(A) through their palette (their raw array holds palette
    indices, not intensities), except label maps written by :func:`~openus_monai.data.palette.write_palette_png`
    (class indices), 1-bit images 8-bit gray, and CMYK/YCbCr/LAB/HSV images RGB. Gray (8 and 16 bit: full
    precision kept), RGB and RGBA images are returned as they are.
    """
    mode = img.mode
    if is_label_map_png(img):  # a label map written by SaveSegMaskd: its palette indices are the classes
        return img
    if mode in ("P", "PA"):
        return img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
    if mode == "1":
        return img.convert("L")
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return img.convert("RGB")
    return img


class _Read:
    """What a checked reader's ``read`` returns: the reader's image objects, or the refusal to raise."""

    __slots__ = ("img", "names", "error")

    def __init__(self, img: Any, names: list[str], error: InvalidImageError | None = None) -> None:
        self.img, self.names, self.error = img, names, error


class _CheckFirst:
    """Mixin for MONAI readers: check each file's header (:func:`~openus_monai.data.validation.check_image`)
    before reading, and turn decoding errors into ``InvalidImageError`` naming the file.

    A refusal is raised from ``get_data``: ``LoadImage`` passes errors of ``read`` on to the next reader
    (which would decode what this one refused) and would hide the reason behind "cannot find a suitable
    reader".
    """

    max_pixels: int | None
    min_size: int

    def read(self, data, **kwargs):
        names = [os.fspath(d) for d in (data if isinstance(data, (list, tuple)) else [data]) if isinstance(d, (str, os.PathLike))]
        for name in names:
            if self.verify_suffix(name):
                try:
                    check_image(name, self.max_pixels, self.min_size, spatial_dims=None)
                except InvalidImageError as e:
                    return _Read(None, names, e)
        return _Read(super().read(data, **kwargs), names)

    def get_data(self, img):
        if not isinstance(img, _Read):
            return super().get_data(img)
        if img.error is not None:
            raise img.error
        try:
            return super().get_data(img.img)
        except InvalidImageError:
            raise
        except Exception as e:  # a truncated or corrupt file that decodes past its header
            names = ", ".join(img.names) or "<in memory>"
            raise InvalidImageError(names, f"cannot be decoded ({type(e).__name__}: {e}); truncated or corrupt file") from e


class CheckedPILReader(_CheckFirst, PILReader):
    """``PILReader`` that checks headers first (see :func:`image_readers`)."""

    def __init__(self, max_pixels: int | None = DEFAULT_MAX_PIXELS, min_size: int = DEFAULT_MIN_SIZE, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_pixels, self.min_size = max_pixels, min_size


class CheckedNibabelReader(_CheckFirst, NibabelReader):
    """``NibabelReader`` that checks headers first (see :func:`image_readers`)."""

    def __init__(self, max_pixels: int | None = DEFAULT_MAX_PIXELS, min_size: int = DEFAULT_MIN_SIZE, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_pixels, self.min_size = max_pixels, min_size


class CheckedITKReader(_CheckFirst, ITKReader):
    """``ITKReader`` that checks headers first (see :func:`image_readers`)."""

    def __init__(self, max_pixels: int | None = DEFAULT_MAX_PIXELS, min_size: int = DEFAULT_MIN_SIZE, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_pixels, self.min_size = max_pixels, min_size


def image_readers(max_pixels: int | None = DEFAULT_MAX_PIXELS, min_size: int = DEFAULT_MIN_SIZE) -> list:
    """The readers for ``LoadImaged(reader=...)``: 2D images as ``[H, W]`` arrays (rows, columns as in the file).

    MONAI tries them last to first: ``PILReader(reverse_indexing=False)`` for PNG, JPEG, BMP, TIFF (palette
    images through their palette, :func:`pil_pixel_mode`; 16-bit gray at full precision);
    ``NibabelReader`` for NIfTI (its own axis order and affine, which the NIfTI outputs keep); and
    ``ITKReader(reverse_indexing=True)`` (numpy order) for DICOM and the other formats ITK reads. (The
    readers' defaults give ``[W, H]``; one ``reverse_indexing`` flag for all readers would not do, since it
    means opposite things to PIL and ITK.)

    Each first checks the file's header and refuses, with an ``InvalidImageError`` naming the file, what is
    not an image (missing, a directory, empty, unidentifiable, a truncated PNG), larger than ``max_pixels``
    (never decoded) or with a side below ``min_size``; a file that fails to decode past its header (a
    truncated JPEG) raises one too.

    ITK and nibabel are dependencies of this package; in an environment that lacks one (a trimmed install on a
    GPU machine, say) its reader is left out, and its formats fail to load with MONAI's "no suitable reader" error.

    Args:
        max_pixels: refuse images with more pixels (None: no limit).
        min_size: refuse images with a shorter side.
    """
    limits = {"max_pixels": max_pixels, "min_size": min_size}
    readers = []
    if optional_import("itk")[1]:
        readers.append(CheckedITKReader(reverse_indexing=True, **limits))
    if optional_import("nibabel")[1]:
        readers.append(CheckedNibabelReader(**limits))
    return readers + [CheckedPILReader(converter=pil_pixel_mode, reverse_indexing=False, **limits)]
