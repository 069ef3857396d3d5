"""Frame readers: every ultrasound file format of a public download as single-channel 2D frames.

A *source* is one file: a still image (PNG, JPEG, BMP, GIF, TIFF 8/16-bit, palette or RGB(A)), a DICOM
(single- or multi-frame; RGB, YBR and MONOCHROME, decoded by ITK/GDCM), a volume or sequence (NIfTI,
MHA/MHD, NRRD; frames along the slowest axis) or a video (MP4, AVI, MOV, ...; decoded by PyAV). Each
frame is returned as a ``[H, W]`` numpy array (colour turned to gray with the BT.601 luma weights), so a
dataset of any format becomes entries ``{"image": path}`` or ``{"image": path, "frame": k}``.

- :func:`source_kind`: which reader a path needs (by name, or the DICOM magic for extension-less files);
- :func:`probe`: frame count and size without decoding every frame where the format allows;
- :func:`iter_frames` / :func:`read_frame`: the frames, optionally every ``stride``-th;
- :func:`to_uint8`: display normalisation used by the PNG cache and hashing;
- :class:`LoadFramed`: a MONAI transform that loads ``{"image": path, "frame": k}`` entries.

Every failure is an :class:`~openus_monai.data.validation.InvalidImageError` naming the file and reason.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import optional_import

from .validation import DEFAULT_MIN_SIZE, InvalidImageError

av, _HAS_AV = optional_import("av")

__all__ = [
    "DICOM_EXTENSIONS",
    "LoadFramed",
    "RASTER_EXTENSIONS",
    "SOURCE_EXTENSIONS",
    "SourceInfo",
    "VIDEO_EXTENSIONS",
    "VOLUME_EXTENSIONS",
    "iter_frames",
    "probe",
    "read_frame",
    "source_kind",
    "to_gray",
    "to_uint8",
]

RASTER_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DICOM_EXTENSIONS: tuple[str, ...] = (".dcm", ".dicom")
VOLUME_EXTENSIONS: tuple[str, ...] = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".wmv", ".mpg", ".mpeg")
SOURCE_EXTENSIONS: tuple[str, ...] = RASTER_EXTENSIONS + DICOM_EXTENSIONS + VOLUME_EXTENSIONS + VIDEO_EXTENSIONS
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as PIL's convert("L")


@dataclass(frozen=True)
class SourceInfo:
    """What :func:`probe` finds in a file.

    Attributes:
        kind: ``"raster"``, ``"dicom"``, ``"volume"`` or ``"video"``.
        n_frames: number of 2D frames (1 for a still image).
        height: rows of a frame.
        width: columns of a frame.
    """

    kind: str
    n_frames: int
    height: int
    width: int


def source_kind(path: str | os.PathLike) -> str | None:
    """The reader a file needs: ``"raster"``, ``"dicom"``, ``"volume"``, ``"video"``, or None (not an image).

    Extension-less files (DICOM exports often have none) are DICOM when bytes 128-131 are ``DICM``.
    """
    name = os.fspath(path).lower()
    for kind, exts in (("raster", RASTER_EXTENSIONS), ("dicom", DICOM_EXTENSIONS),
                       ("volume", VOLUME_EXTENSIONS), ("video", VIDEO_EXTENSIONS)):
        if name.endswith(exts):
            return kind
    if "." not in os.path.basename(name):
        try:
            with open(path, "rb") as f:
                f.seek(128)
                if f.read(4) == b"DICM":
                    return "dicom"
        except OSError:
            return None
    return None


def to_gray(arr: np.ndarray, channel_last: bool = True) -> np.ndarray:
    """A 2D frame as gray ``[H, W]``: RGB(A) by BT.601 luma (alpha dropped), gray+alpha by its gray channel.

    Args:
        arr: ``[H, W]``, ``[H, W, C]`` (channel last) or ``[C, H, W]``.
        channel_last: where the channels are, for 3D input.

    Returns:
        ``[H, W]``; integer input stays integer (rounded) when it was converted from colour.
    """
    arr = np.asarray(arr)
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3:
        raise ValueError(f"expected a 2D frame, got shape {arr.shape}")
    if not channel_last:
        arr = np.moveaxis(arr, 0, -1)
    c = arr.shape[-1]
    if c == 1 or c == 2:
        return arr[..., 0]
    if c in (3, 4):
        gray = arr[..., :3].astype(np.float32) @ _LUMA
        return np.round(gray).astype(arr.dtype) if np.issubdtype(arr.dtype, np.integer) else gray
    raise ValueError(f"cannot make gray from {c} channels (shape {arr.shape})")


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """A gray frame as 8-bit for display, caching and hashing.

    ``uint8`` is kept as is; other integer types (16-bit PNG/DICOM) and floats are scaled from their
    finite min..max to 0..255 (a constant frame becomes 0).
    """
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        return arr
    a = arr.astype(np.float32)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip(np.round((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------- raster


def _pil_frames(path: str, mask: bool) -> Iterator[np.ndarray]:
    from PIL import Image, ImageSequence

    with Image.open(path) as img:
        for frame in ImageSequence.Iterator(img):
            mode = frame.mode
            if mask and mode == "P":
                arr = _palette_mask(frame)
            elif mask and mode in ("L", "1", "I", "I;16"):
                arr = np.array(frame.convert("L") if mode == "1" else frame)
            elif mode in ("P", "PA"):
                arr = np.array(frame.convert("RGBA" if mode == "PA" or "transparency" in frame.info else "RGB"))
            elif mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
                arr = np.array(frame.convert("L" if mode == "1" else "RGB"))
            else:
                arr = np.array(frame)  # L, I;16 (full precision), RGB, RGBA, LA, F
            yield to_gray(arr)


def _palette_mask(frame) -> np.ndarray:
    """A palette mask's labels: the grey levels when every used palette colour is grey (a GIF of a 0/255
    mask, whose indices are arbitrary), else the indices (a class-index PNG with display colours)."""
    idx = np.array(frame)
    palette = np.array(frame.getpalette() or [], dtype=np.int64).reshape(-1, 3)
    used = np.unique(idx)
    if len(palette) > used.max(initial=0) and (palette[used, 0] == palette[used, 1]).all() and (palette[used, 1] == palette[used, 2]).all():
        return palette[:, 0].astype(np.uint8)[idx]
    return idx


def _pil_info(path: str, decode: bool) -> SourceInfo:
    from PIL import Image

    with Image.open(path) as img:
        w, h = img.size
        n = int(getattr(img, "n_frames", 1))
        if decode:
            img.load()  # decodes the first frame: a truncated file fails here
    return SourceInfo("raster", n, h, w)


# --------------------------------------------------------------------------------------- itk volumes


def _itk_frames_array(path: str) -> np.ndarray:
    """``[T, H, W]`` or ``[T, H, W, C]`` (numpy order, frames first) of a DICOM or volume; 4D+ volumes
    are flattened to their 2D slices."""
    import itk

    image = itk.imread(path)
    components = image.GetNumberOfComponentsPerPixel()
    arr = np.asarray(itk.array_view_from_image(image)).copy()
    spatial = arr.shape[:-1] if components > 1 else arr.shape
    frames = int(np.prod(spatial[:-2])) if len(spatial) > 2 else 1
    return arr.reshape(frames, *spatial[-2:], *((components,) if components > 1 else ()))


def _is_nifti(path: str) -> bool:
    return path.lower().endswith((".nii", ".nii.gz"))


def _nifti_frames_array(path: str) -> np.ndarray:
    """``[T, H, W]`` of a NIfTI through nibabel (ITK reads NaN voxels as 0, which would hide them); axes are
    reversed to numpy order as ITK does, so frames match a DICOM of the same series."""
    import nibabel as nib

    data = np.asanyarray(nib.load(path).dataobj)
    data = np.transpose(data, tuple(range(data.ndim))[::-1])
    return data.reshape(-1, *data.shape[-2:]) if data.ndim > 2 else data[None]


def _itk_info(path: str, kind: str) -> SourceInfo:
    if _is_nifti(path):
        import nibabel as nib

        shape = nib.load(path).shape + (1,)
        return SourceInfo(kind, int(np.prod(shape[2:])), int(shape[1]), int(shape[0]))
    import itk

    reader = itk.ImageFileReader.New(FileName=path)
    reader.UpdateOutputInformation()
    io = reader.GetImageIO()
    dims = [io.GetDimensions(i) for i in range(io.GetNumberOfDimensions())]  # x, y, z, ...
    dims += [1] * (3 - len(dims))
    return SourceInfo(kind, int(np.prod(dims[2:])), int(dims[1]), int(dims[0]))


# -------------------------------------------------------------------------------------------- video


def _video_frames(path: str, stride: int) -> Iterator[tuple[int, np.ndarray]]:
    if not _HAS_AV:
        raise InvalidImageError(path, "video needs PyAV (pip install av)")
    with av.open(path) as container:
        if not container.streams.video:
            raise InvalidImageError(path, "no video stream")
        for k, frame in enumerate(container.decode(video=0)):
            if k % stride == 0:
                yield k, frame.to_ndarray(format="gray")


def _video_info(path: str) -> SourceInfo:
    if not _HAS_AV:
        raise InvalidImageError(path, "video needs PyAV (pip install av)")
    with av.open(path) as container:
        if not container.streams.video:
            raise InvalidImageError(path, "no video stream")
        stream = container.streams.video[0]
        # the container's count when it has one, else the packets (one per frame for video streams)
        n = int(stream.frames) or sum(1 for p in container.demux(stream) if p.size)
        w, h = stream.codec_context.width, stream.codec_context.height
    return SourceInfo("video", n, h, w)


# ------------------------------------------------------------------------------------------- public


def _fail(path: str, e: Exception) -> InvalidImageError:
    if isinstance(e, InvalidImageError):
        return e
    return InvalidImageError(path, f"cannot be read ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})")


def probe(path: str | os.PathLike, min_size: int = DEFAULT_MIN_SIZE, decode: bool = True) -> SourceInfo:
    """Kind, frame count and frame size of a file, from its header where the format allows.

    Args:
        path: the file.
        min_size: refuse frames with a side below this (a 1-pixel "image" is an export error).
        decode: still images: decode the first frame too, so that a truncated file is refused here (False
            when the caller decodes it next anyway).

    Raises:
        InvalidImageError: not an image format, empty, unreadable, too small, or no frames.
    """
    path = os.fspath(path)
    kind = source_kind(path)
    if kind is None:
        raise InvalidImageError(path, "not an image, volume or video format")
    if not os.path.isfile(path):
        raise InvalidImageError(path, "does not exist or is not a file")
    if os.path.getsize(path) == 0:
        raise InvalidImageError(path, "empty file (0 bytes)")
    try:
        if kind == "raster":
            info = _pil_info(path, decode)
        elif kind == "video":
            info = _video_info(path)
        else:
            info = _itk_info(path, kind)
    except Exception as e:
        raise _fail(path, e) from e
    if info.n_frames < 1:
        raise InvalidImageError(path, "no frames")
    if min(info.height, info.width) < min_size:
        raise InvalidImageError(path, f"frames of {info.height}x{info.width} pixels, below the minimum side {min_size}")
    return info


def iter_frames(
    path: str | os.PathLike, stride: int = 1, mask: bool = False, check_finite: bool = True
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode a file's frames as gray ``[H, W]`` arrays, every ``stride``-th one.

    Args:
        path: the file.
        stride: keep frames ``0, stride, 2 * stride, ...``.
        mask: read as a label image (palette PNG/GIF: the class indices, not the palette colours).
        check_finite: refuse frames with NaN or Inf values.

    Yields:
        ``(frame index, [H, W] array)``; a still image yields ``(0, array)``.

    Raises:
        InvalidImageError: the file cannot be decoded, has no frames, or non-finite values.
    """
    path, stride = os.fspath(path), max(1, int(stride))
    kind = source_kind(path)
    if kind is None:
        raise InvalidImageError(path, "not an image, volume or video format")
    n = 0
    try:
        if kind == "raster":
            gen = ((k, f) for k, f in enumerate(_pil_frames(path, mask)) if k % stride == 0)
        elif kind == "video":
            gen = _video_frames(path, stride)
        else:
            arr = _nifti_frames_array(path) if _is_nifti(path) else _itk_frames_array(path)
            gen = ((k, to_gray(arr[k])) for k in range(0, arr.shape[0], stride))
        for k, frame in gen:
            if check_finite and np.issubdtype(frame.dtype, np.floating) and not np.isfinite(frame).all():
                raise InvalidImageError(path, f"frame {k} has NaN or Inf values")
            n += 1
            yield k, frame
    except InvalidImageError:
        raise
    except Exception as e:
        raise _fail(path, e) from e
    if n == 0:
        raise InvalidImageError(path, "no frames could be decoded")


def read_frame(path: str | os.PathLike, frame: int | None = None, mask: bool = False) -> np.ndarray:
    """One gray frame ``[H, W]`` of a file (frame 0, or the only one, when ``frame`` is None)."""
    want = 0 if frame is None else int(frame)
    for k, arr in iter_frames(path, mask=mask):
        if k == want:
            return arr
    raise InvalidImageError(os.fspath(path), f"has no frame {want}")


class LoadFramed(MapTransform):
    """Load ``{"image": path, "frame": k}`` entries (any format of this module) as ``[1, H, W]`` tensors.

    The frame key may be absent (a still image, frame 0). Metadata keeps the file name and frame, so
    errors downstream name the source.

    Args:
        keys: path keys to load (e.g. ``("image", "mask")``).
        frame_key: entry key holding the frame index.
        mask_keys: keys read as label images (palette indices kept, no float scaling).
        allow_missing_keys: skip absent keys.
    """

    def __init__(self, keys: KeysCollection = "image", frame_key: str = "frame", mask_keys: KeysCollection = (),
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.frame_key = frame_key
        self.mask_keys = {mask_keys} if isinstance(mask_keys, str) else set(mask_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        frame = d.get(self.frame_key)
        for key in self.key_iterator(d):
            path = os.fspath(d[key])
            arr = read_frame(path, frame, mask=key in self.mask_keys)
            meta = {"filename_or_obj": path, "frame": -1 if frame is None else int(frame)}
            d[key] = MetaTensor(torch.as_tensor(arr.astype(np.float32))[None], meta=meta)
        return d
