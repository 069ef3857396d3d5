"""Segmentation masks: checked against their image on loading, saved as uint8 files in their input's format."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, SaveImage, SaveImaged

from ..data.checked_readers import is_nifti, source_path
from ..data.palette import write_palette_png
from ..data.validation import InvalidImageError
from .grayscale import squeeze_trailing

__all__ = ["CheckSegPaird", "SaveSegMaskd"]


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
        mask = squeeze_trailing(label)
        if mask.ndim != 3:
            raise self._fail(image, label, f"expected a 2D mask, got shape {list(label.shape)} (channel first)")
        if mask.shape[0] > 1:
            colour = mask[:3] if mask.shape[0] in (3, 4) else mask
            if not bool((colour == colour[:1]).all()):
                raise self._fail(
                    image, label, f"the mask has {mask.shape[0]} channels that differ (a colour mask?); save it as one channel of class values"
                )
            mask = mask[:1]
        image_size = tuple(squeeze_trailing(image).shape[1:])
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

    PNG masks are palette PNGs (:func:`~openus_monai.data.palette.write_palette_png`): the pixel values
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
