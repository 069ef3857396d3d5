"""Checks of input files before they reach a model, and what a run does with the invalid ones.

A long pretraining run reads hundreds of thousands of files from many sources, and a clinic's folder goes
into inference: a 0-byte file, a truncated PNG, a text file named ``.png``, a 20000x20000 image, a volume
full of NaN or a mask that does not fit its image must stop the run with a message naming the file and
the problem, or (``skip_invalid``) be skipped, counted and listed, but never be read as zeros or garbage.

- :func:`read_header` / :func:`check_image` / :func:`check_pair`: header-level checks (PIL reads only the
  header, ITK and nibabel only the image information), cheap enough to run on a whole data set up front;
- :func:`check_array`: what only the decoded pixels show (NaN/Inf), used by the load-time transforms;
- :class:`InvalidImageError` (one file) and :class:`InvalidDataError` (all invalid files found at once);
- :class:`InvalidFiles`: the policy of a run (stop, or skip and record) and its report
  (``skipped_files.json`` / ``.csv``), also an Ignite handler that writes the report when the run completes;
- :func:`validate_datalist`: the up-front check of a datalist, in threads.

Decisions per kind of file are in :data:`FAULT_POLICY` (the tests' fault corpus covers each).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import optional_import

from ..options import as_flag

Events, _ = optional_import("ignite.engine", name="Events")

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_SIZE",
    "FAULT_POLICY",
    "ImageHeader",
    "InvalidDataError",
    "InvalidFiles",
    "InvalidFilesReportHandler",
    "InvalidImageError",
    "check_array",
    "check_image",
    "check_pair",
    "find_invalid",
    "read_header",
    "validate_datalist",
]

logger = logging.getLogger(__name__)

#: largest accepted image, in pixels (8192 x 8192); larger ones are refused from the header, before decoding
DEFAULT_MAX_PIXELS: int = 8192 * 8192
#: smallest accepted side, in pixels (a 1x1 "image" is an export error, not an ultrasound frame)
DEFAULT_MIN_SIZE: int = 8

#: what happens to each kind of unusual file: ``invalid`` files are refused (stop, or skipped with
#: ``skip_invalid``), ``valid`` ones are read correctly
FAULT_POLICY: dict[str, str] = {
    "empty file (0 bytes)": "invalid: header check",
    "truncated PNG": "invalid: header check (no IEND chunk at the end)",
    "truncated JPEG": "invalid: at load time (decoding fails)",
    "JPEG named .png": "valid: read by content (PIL identifies the format)",
    "text file named .png": "invalid: header check (not an image)",
    "unreadable DICOM (garbage, no pixel data)": "invalid: header check (ITK cannot read the image information)",
    "1x1 image": f"invalid: header check (sides below {DEFAULT_MIN_SIZE} pixels)",
    "20000x20000 image": f"invalid: header check (over {DEFAULT_MAX_PIXELS} pixels: too large), never decoded",
    "16-bit PNG": "valid: read at full precision (uint16 values kept)",
    "RGBA PNG": "valid: alpha dropped, RGB to gray (BT.601)",
    "palette PNG": "valid: read through its palette (not as palette indices)",
    "NaN/Inf image (NIfTI)": "invalid: at load time (values checked after decoding)",
    "mask of another size": "invalid: header check of the pair (and at load time)",
    "mask values outside the label set": "invalid: at load time (CheckSegPaird)",
    "path that does not exist": "invalid: header check",
    "directory instead of a file": "invalid: header check",
}

_PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_PNG_END = b"IEND"


# ----------------------------------------------------------------------------------------------- errors


class InvalidImageError(ValueError):
    """An input file that cannot be used, with the reason.

    Args:
        path: the file (or files) at fault.
        reason: what is wrong with it, in words a user can act on.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = str(path), str(reason)
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):  # picklable across processes (two arguments)
        return type(self), (self.path, self.reason)


class InvalidDataError(ValueError):
    """Every invalid input file found (by an up-front check or while caching), in one error.

    Args:
        errors: the :class:`InvalidImageError` of each file.
        stage: where they were found (``"datalist"``: the up-front header check; ``"cache"``: decoding).
        limit: at most this many files are listed in the message (all are in ``errors``).
    """

    def __init__(self, errors: Sequence[InvalidImageError], stage: str = "datalist", limit: int = 50) -> None:
        self.errors, self.stage = list(errors), stage
        lines = [f"  {e}" for e in self.errors[:limit]]
        if len(self.errors) > limit:
            lines.append(f"  ... and {len(self.errors) - limit} more")
        super().__init__(
            f"{len(self.errors)} invalid input file(s) found ({stage} check); fix or remove them, or set "
            "skip_invalid=true to skip them and list them in <output_dir>/skipped_files.csv:\n" + "\n".join(lines)
        )

    def __reduce__(self):
        return type(self), (self.errors, self.stage)


def find_invalid(error: BaseException | None) -> InvalidImageError | None:
    """The :class:`InvalidImageError` in an exception's chain (MONAI wraps transform errors), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InvalidImageError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


# ---------------------------------------------------------------------------------------------- headers


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says.

    Attributes:
        path: the file.
        shape: spatial shape in the order the bundles' readers return (rows, columns for PIL and ITK files;
            NIfTI's own axis order), trailing singleton dims dropped (at least two dims kept).
        channels: values per pixel (1 gray, 3 RGB, 4 RGBA, ...).
        format: ``"PIL:<format>"``, ``"NIfTI"`` or ``"ITK:<ImageIO>"``.
    """

    path: str
    shape: tuple[int, ...]
    channels: int
    format: str


def _drop_trailing_ones(shape: Sequence[int]) -> tuple[int, ...]:
    shape = [int(s) for s in shape]
    while len(shape) > 2 and shape[-1] == 1:
        shape.pop()
    return tuple(shape)


def _pil_header(path: str) -> ImageHeader:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                width, height = im.size
                channels, fmt = len(im.getbands()), str(im.format)
    except Image.DecompressionBombError as e:
        raise InvalidImageError(path, f"too large: PIL refuses to decode it ({e}); not decoded") from None
    except UnidentifiedImageError:
        raise InvalidImageError(
            path, "not an image file PIL can identify (wrong extension, or not an image at all)"
        ) from None
    except Exception as e:  # a broken header
        raise InvalidImageError(path, f"unreadable image header ({type(e).__name__}: {e})") from None
    if fmt == "PNG":
        with open(path, "rb") as f:  # a PNG ends with its IEND chunk: a cheap test for truncation
            f.seek(max(0, os.path.getsize(path) - 1024))
            if _PNG_END not in f.read():
                raise InvalidImageError(path, "truncated PNG (no IEND chunk at the end of the file)")
    return ImageHeader(path, (height, width), channels, f"PIL:{fmt}")


def _nifti_header(path: str) -> ImageHeader:
    import nibabel as nib

    try:
        header = nib.load(path).header  # the data stay on disk
        shape = header.get_data_shape()
    except Exception as e:
        raise InvalidImageError(path, f"not a readable NIfTI file ({type(e).__name__}: {e})") from None
    if len(shape) < 2:
        raise InvalidImageError(path, f"not an image: NIfTI data shape {list(shape)}")
    return ImageHeader(path, _drop_trailing_ones(shape), 1, "NIfTI")


def _itk_header(path: str) -> ImageHeader:
    itk, has_itk = optional_import("itk")
    if not has_itk:
        raise InvalidImageError(path, "cannot be checked: ITK is not installed (needed for DICOM and other ITK formats)")
    io = itk.ImageIOFactory.CreateImageIO(path, itk.CommonEnums.IOFileMode_ReadMode)
    if io is None:
        kind = "DICOM" if path.lower().endswith((".dcm", ".dicom")) else "image"
        raise InvalidImageError(path, f"not a readable {kind} file (ITK finds no image in it: not {kind}, or no pixel data)")
    try:
        io.SetFileName(path)
        io.ReadImageInformation()
        dims = [int(io.GetDimensions(i)) for i in range(io.GetNumberOfDimensions())]
        channels = int(io.GetNumberOfComponents())
    except Exception as e:
        raise InvalidImageError(path, f"unreadable image header ({type(e).__name__}: {str(e).strip()[:200]})") from None
    if len(dims) < 2 or min(dims) < 1:
        raise InvalidImageError(path, f"no pixel data (image dimensions {dims})")
    # ITK lists sizes fastest axis first (x, y, z): a one-slice DICOM is (W, H, 1), returned as (H, W)
    return ImageHeader(path, _drop_trailing_ones(dims)[::-1], channels, f"ITK:{io.GetNameOfClass()}")


def read_header(path: str | os.PathLike) -> ImageHeader:
    """Read an image file's header (not its pixels).

    PNG, JPEG, BMP, TIFF (PIL), NIfTI (nibabel), DICOM and the other formats ITK reads; a file whose
    extension PIL does not know is tried with PIL, then ITK.

    Raises:
        InvalidImageError: no such path, a directory, an empty or unreadable file, no identifiable image,
            a truncated PNG.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InvalidImageError(path, "does not exist")
    if os.path.isdir(path):
        raise InvalidImageError(path, "is a directory, not an image file")
    if not os.path.isfile(path):
        raise InvalidImageError(path, "is not a regular file")
    if os.path.getsize(path) == 0:
        raise InvalidImageError(path, "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise InvalidImageError(path, "cannot be read (permission denied)")
    name = path.lower()
    if name.endswith(_NIFTI_SUFFIXES):
        return _nifti_header(path)
    if name.endswith(_PIL_SUFFIXES):
        return _pil_header(path)
    if name.endswith((".dcm", ".dicom")):
        return _itk_header(path)
    try:
        return _pil_header(path)
    except InvalidImageError:
        return _itk_header(path)


def check_image(
    path: str | os.PathLike,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_size: int = DEFAULT_MIN_SIZE,
    spatial_dims: int | None = 2,
) -> ImageHeader:
    """Check an image file from its header: readable, not too large to decode, not too small, 2D.

    Args:
        path: the file.
        max_pixels: refuse more pixels than this (None: no limit).
        min_size: refuse a side shorter than this.
        spatial_dims: refuse other numbers of (non-singleton) spatial dims (None: any).

    Returns:
        the header.

    Raises:
        InvalidImageError: the file and the reason.
    """
    header = read_header(path)
    shape = header.shape
    size = "x".join(str(s) for s in shape)
    if spatial_dims is not None and len(shape) != spatial_dims:
        raise InvalidImageError(path, f"a {len(shape)}D image of shape {list(shape)}; {spatial_dims}D images are expected")
    pixels = int(np.prod(shape, dtype=np.int64))
    if max_pixels is not None and pixels > max_pixels:
        raise InvalidImageError(
            path, f"too large: {size} image ({pixels / 1e6:.0f} megapixels), over the limit of {max_pixels} pixels (max_pixels); not decoded"
        )
    if min(shape) < min_size:
        raise InvalidImageError(path, f"{size} image is too small (every side must be at least {min_size} pixels)")
    if header.channels > 4:
        raise InvalidImageError(path, f"{header.channels} values per pixel; gray, RGB or RGBA images are expected")
    return header


def check_pair(
    image: str | os.PathLike,
    mask: str | os.PathLike,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_size: int = DEFAULT_MIN_SIZE,
) -> tuple[ImageHeader, ImageHeader]:
    """Check an image and its mask from their headers: each as :func:`check_image`, and the same size.

    Sizes are compared when both files are read in the same axis order (both NIfTI, or neither); the
    values of the mask are checked at load time (:class:`~openus_monai.transforms.CheckSegPaird`).

    Raises:
        InvalidImageError: naming the file at fault (the mask for a size mismatch, with its image).
    """
    image_header = check_image(image, max_pixels, min_size)
    mask_header = check_image(mask, max_pixels, min_size)
    _compare_sizes(image_header, mask_header)
    return image_header, mask_header


def _compare_sizes(image: ImageHeader, mask: ImageHeader) -> None:
    same_order = (image.format == "NIfTI") == (mask.format == "NIfTI")
    if same_order and image.shape != mask.shape:
        raise InvalidImageError(
            mask.path, f"mask of size {list(mask.shape)} does not fit its image {image.path} of size {list(image.shape)}"
        )


def check_array(img: Any, path: str = "<in memory>", min_size: int = DEFAULT_MIN_SIZE) -> None:
    """Check decoded pixels ``[C, *spatial]``: finite values and sides of at least ``min_size``.

    Raises:
        InvalidImageError: NaN or Inf values (counted), or a side too short.
    """
    x = torch.as_tensor(img)
    sides = [int(s) for s in x.shape[1:] if int(s) != 1]  # singleton dims: a 2D image stored as 3D
    if len(sides) < 2 or min(sides) < min_size:
        raise InvalidImageError(path, f"image of shape {list(x.shape[1:])} is too small (sides must be at least {min_size} pixels)")
    if x.is_floating_point() or x.is_complex():
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            n_nan = int(torch.isnan(x).sum())
            n_inf = int((~finite).sum()) - n_nan
            raise InvalidImageError(path, f"{n_nan} NaN and {n_inf} Inf values among its {x.numel()} values")


# ----------------------------------------------------------------------------------------------- policy


class InvalidFiles:
    """What a run does with invalid input files, and its report of the ones it skipped.

    With ``skip=False`` (the default), :meth:`handle` raises one :class:`InvalidDataError` listing every
    invalid file it is given. With ``skip=True`` it records them (a warning per file, up to ``max_logged``,
    and a summary line) and the caller drops them. Records go to ``<output_dir>/<name>.jsonl`` as they
    come (DataLoader worker processes append to it too), and the report ``<name>.json``
    (``{"n_skipped", "files": [{"path", "reason", "stage"}]}``) and ``<name>.csv`` (``path,reason,stage``)
    are rewritten from it, on each record and when the engine this object is attached to completes.

    Attach it to the trainer or evaluator (``handlers`` list of a bundle config) for the end-of-run report
    and summary line.

    Args:
        skip: skip invalid files (True) or stop the run (False); the strings ``"true"``/``"false"`` (as the
            command line gives them) are understood.
        output_dir: folder of the report; None keeps the records in memory only (one process).
        name: base name of the report files.
        max_logged: log a warning for at most this many files (all are in the report).
    """

    def __init__(self, skip: bool = False, output_dir: str | os.PathLike | None = None, name: str = "skipped_files",
                 max_logged: int = 20) -> None:
        self.skip, self.name, self.max_logged = as_flag(skip, "skip_invalid"), name, int(max_logged)
        self.output_dir = Path(output_dir) if output_dir else None
        self._memory: list[dict] = []
        self._logged = 0
        if self.skip and self.output_dir is not None and self.log_path.exists():
            self.log_path.unlink()  # records of an earlier run

    @property
    def log_path(self) -> Path:
        """The running record (JSON lines)."""
        return (self.output_dir or Path(".")) / f"{self.name}.jsonl"

    @property
    def report_paths(self) -> tuple[Path, Path]:
        """The report: ``<name>.json`` and ``<name>.csv``."""
        folder = self.output_dir or Path(".")
        return folder / f"{self.name}.json", folder / f"{self.name}.csv"

    def handle(self, errors: Sequence[InvalidImageError], stage: str) -> None:
        """Stop (one error listing all ``errors``) or record them, as the policy says; nothing when empty.

        Raises:
            InvalidDataError: ``errors`` is not empty and ``skip`` is False.
        """
        if not errors:
            return
        if not self.skip:
            raise InvalidDataError(errors, stage)
        self.record(errors, stage)
        logger.warning(
            "skip_invalid: skipped %d invalid file(s) at the %s check%s",
            len(errors), stage, f"; list in {self.report_paths[1]}" if self.output_dir else "",
        )

    def record(self, errors: Iterable[InvalidImageError], stage: str) -> None:
        """Add skipped files to the record and rewrite the report (safe from DataLoader workers)."""
        rows = [{"path": e.path, "reason": e.reason, "stage": stage} for e in errors]
        for row in rows:
            if self._logged < self.max_logged:
                logger.warning("skipping invalid file %s: %s", row["path"], row["reason"])
                self._logged += 1
        if self.output_dir is None:
            self._memory.extend(rows)
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as f:  # one write per call: appends from processes interleave by line
            f.write("".join(json.dumps(row) + "\n" for row in rows))
        self.write()

    def records(self) -> list[dict]:
        """Every skipped file so far, once per (path, reason), in the order first seen."""
        rows = list(self._memory)
        if self.output_dir is not None and self.log_path.is_file():
            for line in self.log_path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rows.append(json.loads(line))
        seen, unique = set(), []
        for row in rows:
            key = (row["path"], row["reason"])
            if key not in seen:
                seen.add(key)
                unique.append(row)
        return unique

    def write(self) -> list[dict]:
        """Write the report files (when there is an ``output_dir``); returns the records."""
        rows = self.records()
        if self.output_dir is None:
            return rows
        self.output_dir.mkdir(parents=True, exist_ok=True)
        json_path, csv_path = self.report_paths
        tmp = json_path.with_name(f".{json_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"n_skipped": len(rows), "files": rows}, indent=4) + "\n", encoding="utf-8")
        os.replace(tmp, json_path)  # atomic: readers never see half a file
        tmp = csv_path.with_name(f".{csv_path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["path", "reason", "stage"])
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, csv_path)
        return rows

    def attach(self, engine: Any) -> None:
        """Write the report and a summary line when ``engine`` completes (nothing with ``skip=False``)."""
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def completed(self, engine: Any = None) -> None:
        if not self.skip:
            return
        rows = self.write()
        where = f" (list in {self.report_paths[1]})" if self.output_dir else ""
        if rows:
            logger.warning("skip_invalid: %d invalid input file(s) were skipped in this run%s", len(rows), where)
        else:
            logger.info("skip_invalid: no invalid input files in this run%s", where)


class InvalidFilesReportHandler:
    """Ignite handler for a bundle's ``handlers`` list: attaches :class:`InvalidFiles` (its end-of-run report).

    MONAI's bundle tooling (``ConfigWorkflow.check_properties``, MONAI Label's bundle tasks) expects every
    entry of a handlers list to be a ``_target_`` dict, so the shared ``@invalid_files`` object goes in
    through this wrapper.
    """

    def __init__(self, invalid_files: InvalidFiles) -> None:
        self.invalid_files = invalid_files

    def attach(self, engine: Any) -> None:
        self.invalid_files.attach(engine)


# --------------------------------------------------------------------------------------------- datalists


def _paths(value: Any) -> list[str]:
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)] if os.fspath(value) else []
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, os.PathLike)) for v in value):
        return [os.fspath(v) for v in value]
    return []


def _check_entry(entry: Mapping, keys: Sequence[str], pair: Sequence[str] | None, max_pixels: int | None,
                 min_size: int) -> list[InvalidImageError]:
    errors = []
    if pair is not None and _paths(entry.get(pair[0])) and _paths(entry.get(pair[1])):
        headers = []
        for path in (_paths(entry[pair[0]])[0], _paths(entry[pair[1]])[0]):
            try:
                headers.append(check_image(path, max_pixels, min_size))
            except InvalidImageError as e:
                errors.append(e)
        if not errors:
            try:
                _compare_sizes(*headers)
            except InvalidImageError as e:
                errors.append(e)
        keys = [k for k in keys if k not in pair]
    for key in keys:
        for path in _paths(entry.get(key)):
            try:
                check_image(path, max_pixels, min_size)
            except InvalidImageError as e:
                errors.append(e)
    return errors


def validate_datalist(
    datalist: Sequence[Mapping] | Mapping[str, Any],
    invalid_files: InvalidFiles | None = None,
    keys: Sequence[str] = ("image",),
    pair: Sequence[str] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_size: int = DEFAULT_MIN_SIZE,
    num_threads: int = 8,
) -> Any:
    """Check every file of a datalist from its header (:func:`check_image`, :func:`check_pair`), up front.

    All invalid files are found before the policy acts: ``invalid_files.skip`` False (or no policy) raises
    one :class:`InvalidDataError` listing each with its reason; True drops their entries and records them.
    Headers only: a few milliseconds per file, in ``num_threads`` threads; what only decoding shows
    (truncated JPEG, NaN values, mask values) is caught at load time.

    Args:
        datalist: a list of entries, or ``{"training": [...], "validation": [...], "test": [...], ...}``
            (other keys, such as ``classes``, are passed through).
        invalid_files: the run's policy and report (default: stop).
        keys: entry keys holding file paths (an entry without the key, e.g. an unlabeled one, is fine).
        pair: ``(image_key, mask_key)``: also check that the mask has its image's size.
        max_pixels: see :func:`check_image`.
        min_size: see :func:`check_image`.
        num_threads: threads reading headers.

    Returns:
        the datalist without the invalid entries (same structure).

    Raises:
        InvalidDataError: invalid files and ``skip`` False.
    """
    policy = invalid_files if invalid_files is not None else InvalidFiles()
    keys = list(dict.fromkeys([*keys, *(pair or ())]))
    is_mapping = isinstance(datalist, Mapping)
    lists = {k: v for k, v in datalist.items() if isinstance(v, list)} if is_mapping else {"": list(datalist)}
    entries = [(split, i, e) for split, items in lists.items() for i, e in enumerate(items)]

    def run(item):
        return _check_entry(item[2], keys, pair, max_pixels, min_size) if isinstance(item[2], Mapping) else []

    with ThreadPoolExecutor(max(1, int(num_threads))) as pool:
        results = list(pool.map(run, entries))
    bad = {(split, i) for (split, i, _), errors in zip(entries, results) if errors}
    errors, seen = [], set()
    for found in results:
        for e in found:  # a file listed twice (e.g. in two splits) is reported once
            if (e.path, e.reason) not in seen:
                seen.add((e.path, e.reason))
                errors.append(e)
    policy.handle(errors, "datalist")
    kept = {split: [e for i, e in enumerate(items) if (split, i) not in bad] for split, items in lists.items()}
    if bad:
        logger.info("datalist check: %d of %d entries kept", sum(map(len, kept.values())), len(entries))
    if not is_mapping:
        return kept[""]
    return {k: kept.get(k, v) for k, v in datalist.items()}
