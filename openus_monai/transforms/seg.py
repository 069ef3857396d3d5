"""Segmentation transforms: grayscale 2D images, checked image/mask pairs, masks saved as uint8 files.

MONAI reads, resizes and saves; what it lacks, and is written here, is: readers that refuse invalid
files from their header before decoding (a 20000x20000 PNG is never decoded) and read palette images
through their palette, RGB(A) to grayscale with a check of the decoded values (no NaN/Inf), a check that a
mask matches its image (size, values) with an error naming both files, and a saver that writes each mask
in its input's format (PNG for 2D image files, NIfTI for NIfTI) under the input's name. Every refusal is
an :class:`~openus_monai.data.validation.InvalidImageError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ITKReader, MetaTensor, NibabelReader, PILReader
from monai.transforms import MapTransform, SaveImage, SaveImaged

from openus_monai.data.validation import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIZE, InvalidImageError, check_array, check_image
from openus_monai.transforms.palette import is_label_map_png, write_palette_png

__all__ = [
    "CheckSegPaird",
    "CheckedITKReader",
    "CheckedNibabelReader",
    "CheckedPILReader",
    "EnsureGray2Dd",
    "SaveSegMaskd",
    "image_readers",
    "is_nifti",
    "pil_pixel_mode",
    "source_path",
    "to_gray_2d",
]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights, as PIL's convert("L")


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
    indices, not intensities), except label maps written by :class:`SaveSegMaskd` (class indices), 1-bit images 8-bit gray, and CMYK/YCbCr/LAB/HSV images RGB. Gray (8 and
    16 bit: full precision kept), RGB and RGBA images are returned as they are.
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

    Args:
        max_pixels: refuse images with more pixels (None: no limit).
        min_size: refuse images with a shorter side.
    """
    limits = {"max_pixels": max_pixels, "min_size": min_size}
    return [
        CheckedITKReader(reverse_indexing=True, **limits),
        CheckedNibabelReader(**limits),
        CheckedPILReader(converter=pil_pixel_mode, reverse_indexing=False, **limits),
    ]


def _squeeze_trailing(x: torch.Tensor, spatial_dims: int = 2) -> torch.Tensor:
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
    img = _squeeze_trailing(img)
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


class CheckSegPaird(MapTransform):
    """Check a mask against its image and convert it to class indices ``[1, H, W]``.

    - trailing singleton dims are dropped; a multi-channel mask (an RGB PNG) is accepted when its colour
      channels are equal and reduced to one;
    - the mask's size must equal the image's;
    - values must be class indices ``0..num_classes-1``, or (binary tasks) ``0/255``, which become ``0/1``;
      with ``threshold`` set, the mask is binarised as ``mask > threshold`` instead (lossy masks, e.g. JPEG).

    Every failure raises an :class:`~openus_monai.data.validation.InvalidImageError` (a ``ValueError``)
    naming the mask and its image. A missing label key is skipped (unlabeled images), so the same pipeline
    serves inference.

    Args:
        image_key: the image key (its file is named in errors; its size is the reference).
        label_key: the mask key.
        num_classes: classes including background (2: background and lesion).
        threshold: binarise with ``mask > threshold`` (None: values must already be valid).
    """

    def __init__(self, image_key: str = "image", label_key: str = "label", num_classes: int = 2, threshold: float | None = None) -> None:
        super().__init__([label_key], allow_missing_keys=True)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2 (background included), got {num_classes}")
        self.image_key, self.label_key = image_key, label_key
        self.num_classes, self.threshold = int(num_classes), threshold

    def _fail(self, image: Any, label: Any, problem: str) -> InvalidImageError:
        return InvalidImageError(source_path(label), f"mask does not fit image {source_path(image)}: {problem}")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.label_key not in d:
            return d
        image, label = d[self.image_key], d[self.label_key]
        mask = _squeeze_trailing(label)
        if mask.ndim != 3:
            raise self._fail(image, label, f"expected a 2D mask, got shape {list(label.shape)} (channel first)")
        if mask.shape[0] > 1:
            colour = mask[:3] if mask.shape[0] in (3, 4) else mask
            if not bool((colour == colour[:1]).all()):
                raise self._fail(
                    image, label, f"the mask has {mask.shape[0]} channels that differ (a colour mask?); save it as one channel of class values"
                )
            mask = mask[:1]
        image_size = tuple(_squeeze_trailing(image).shape[1:])
        if tuple(mask.shape[1:]) != image_size:
            raise self._fail(image, label, f"size {list(mask.shape[1:])} differs from the image's {list(image_size)}")
        if self.threshold is not None:
            mask = (mask > self.threshold).to(mask.dtype)
        else:
            values = torch.unique(mask)
            as_list = [float(v) for v in values[:12]]
            if not bool((values == values.round()).all()):
                raise self._fail(image, label, f"non-integer values {as_list}; expected 0/1, 0/255 or class indices (or set a threshold)")
            if values.min() < 0:
                raise self._fail(image, label, f"negative values {as_list}")
            if values.max() >= self.num_classes:
                if self.num_classes == 2 and bool(((values == 0) | (values == 255)).all()):
                    mask = (mask == 255).to(mask.dtype)
                else:
                    allowed = "0/1 or 0/255" if self.num_classes == 2 else f"class indices 0..{self.num_classes - 1}"
                    more = f" ({len(values)} distinct)" if len(values) > 12 else ""
                    raise self._fail(image, label, f"unexpected values {as_list}{more}; expected {allowed}")
        if isinstance(label, MetaTensor) and not isinstance(mask, MetaTensor):
            mask = MetaTensor(mask, meta=label.meta)
        d[self.label_key] = mask
        return d


class SaveSegMaskd(SaveImaged):
    """Save each predicted label map as a uint8 file named after its input: PNG for image files (PNG, JPEG,
    BMP, TIFF, DICOM...), NIfTI (``.nii.gz``, with the input's affine) for NIfTI input. Optionally also an
    overlay PNG (``NAME_overlay.png``: the image with the mask tinted red).

    PNG masks are palette PNGs (:func:`~openus_monai.transforms.palette.write_palette_png`): the pixel values
    are the class indices (0, 1, ...), shown in colour (background black, lesion red) by any viewer.

    A :class:`~monai.transforms.SaveImaged` subclass, so MONAI Label's bundle tasks drop it from the
    postprocessing (they return the label map themselves). Expects the label map at the input's original
    size (``Invertd`` first), as ``[H, W]`` or ``[1, H, W]`` class indices; 2D arrays are ``[H, W]`` as in
    the file (read with :func:`image_readers`), and are written the same way.

    Args:
        keys: the label-map key, usually ``"pred"``.
        output_dir: the folder to write to.
        image_key: key of the input image (its file gives the name and format).
        output_postfix: appended to the name as ``NAME_postfix``; ``""`` keeps the input's name.
        data_root_dir: keep input sub-folders below this folder (avoids name clashes), as in ``SaveImaged``.
        overlay: also write ``NAME_overlay.png`` (2D image inputs).
        print_log: log every file written.
        palette: write PNG masks as palette PNGs (False: plain 8-bit gray class indices).
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_dir: str | os.PathLike = "./",
        image_key: str = "image",
        output_postfix: str = "",
        data_root_dir: str = "",
        overlay: bool = False,
        print_log: bool = False,
        allow_missing_keys: bool = False,
        palette: bool = True,
    ) -> None:
        common = dict(output_postfix=output_postfix, resample=False, output_dtype=np.uint8, separate_folder=False,
                      data_root_dir=data_root_dir, print_log=print_log)
        super().__init__(keys, output_dir=str(output_dir), output_ext=".png", writer="PILWriter", scale=None,
                         allow_missing_keys=allow_missing_keys, **common)
        self.saver.set_options(write_kwargs={"reverse_indexing": False})
        self.nifti_saver = SaveImage(output_dir=str(output_dir), output_ext=".nii.gz", writer="NibabelWriter", **common)
        self.image_key, self.overlay, self.output_dir = image_key, overlay, Path(output_dir)
        self.palette = palette

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d.get(self.image_key)
        for key in self.key_iterator(d):
            pred = d[key]
            src = source_path(image) if image is not None else source_path(pred)
            meta = dict(getattr(image, "meta", None) or getattr(pred, "meta", None) or {})
            if meta.get("filename_or_obj") is None:
                raise ValueError(f"cannot name the output for '{key}': its image has no file name in its metadata")
            # a plain tensor, so that SaveImage names the file after the image (a MetaTensor's own meta would win)
            labels = (pred.as_tensor() if isinstance(pred, MetaTensor) else torch.as_tensor(pred)).detach().cpu()
            labels = labels[None] if labels.ndim == 2 else labels
            if labels.ndim != 3 or labels.shape[0] != 1:
                raise ValueError(f"{src}: expected a label map [H, W] or [1, H, W], got {list(labels.shape)}")
            labels = labels.round().clamp(0, 255).to(torch.uint8)
            if is_nifti(src):
                self.nifti_saver(MetaTensor(labels, meta=meta))  # the input's affine and header come with its metadata
            else:
                # a 2D file: the written shape is the label map's (a DICOM's metadata may describe one 3D slice)
                meta["spatial_shape"] = np.asarray(labels.shape[1:])
                self.saver(labels, meta_data=meta)
                if self.palette:  # MONAI's PILWriter writes gray; the same indices again, with colours
                    write_palette_png(labels[0].numpy(), self._mask_path(meta))
                if self.overlay:
                    self._write_overlay(src, labels[0].numpy(), meta)
        return d

    def _mask_path(self, meta: Mapping) -> str:
        return str(self.saver.folder_layout.filename(**self.saver.fname_formatter(dict(meta), self.saver)))

    def _write_overlay(self, src: str, labels: np.ndarray, meta: Mapping) -> None:
        from PIL import Image

        path = Path(self._mask_path(meta)[: -len(".png")] + "_overlay.png")
        try:
            with Image.open(src) as im:
                gray = np.asarray(im.convert("L"), dtype=np.float32)
        except Exception:  # not a PIL format (e.g. DICOM): no overlay, the mask is already written
            return
        if gray.shape != labels.shape:
            return
        rgb = np.repeat(gray[..., None], 3, axis=2)
        fg = labels > 0
        rgb[fg] = 0.55 * rgb[fg] + 0.45 * np.array([255.0, 0.0, 0.0])
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(path)
