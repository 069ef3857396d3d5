"""A generated corpus of bad (and valid but unusual) input files, with a manifest of what should happen.

Usable as a module (``write_fault_corpus(out_dir)``) and as a script::

    python tests/fault_corpus.py OUT_DIR

which writes ``OUT_DIR/images/*`` (one file per kind), ``OUT_DIR/masks/*`` (a mask per image, two of them
bad), ``OUT_DIR/expected/*.npy`` (the gray values the valid unusual files must be read as) and
``OUT_DIR/manifest.json`` (and ``OUT_DIR/inference_list.json``: every image, as a MONAI datalist's test list).
Each manifest entry says:

- ``kind``: the fault; ``image``/``mask``: paths relative to ``OUT_DIR``;
- ``image_valid``: whether the image alone must be read (True) or refused (False);
- ``pair_valid``: whether the image with its mask must be used for segmentation;
- ``named``: the file an error must name (``image`` or ``mask``); ``reason``: a phrase of the error;
- ``stage``: where it is caught: ``header`` (up front, from headers) or ``load`` (only decoding shows it);
- ``expected``: for valid unusual images, the ``.npy`` of the ``[H, W]`` float gray values they must give.

Everything is small on disk: the 20000x20000 PNG is a crafted header with a few bytes of pixel data; it
must be refused from its header, never decoded.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 40, 48  # size of every corpus image (masks fit it, except the one that must not)
_LUMA = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)

__all__ = ["H", "W", "write_fault_corpus"]


def _smooth(seed: int, scale: float = 255.0) -> np.ndarray:
    """A smooth [H, W] pattern in [0, scale] (JPEG keeps it well)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    return (0.5 + 0.5 * np.sin(x / (5.0 + seed) + y / 7.0)) * scale


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _huge_png(path: Path, side: int = 20000) -> None:
    """A PNG whose header says side x side 8-bit gray, with the first rows of (zero) data: ~100 bytes."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (side + 1) * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def _dicom_without_pixels(path: Path) -> None:
    """A DICOM data set cut just before its PixelData element (a header with no image)."""
    import itk

    full = path.with_name("_full.dcm")
    itk.imwrite(itk.image_from_array(np.arange(H * W, dtype=np.int16).reshape(H, W)), str(full))
    data = full.read_bytes()
    full.unlink()
    cut = data.rfind(b"\xe0\x7f\x10\x00")  # tag (7FE0,0010), little endian
    if cut < 0:
        raise RuntimeError("no PixelData element found in the DICOM ITK wrote")
    path.write_bytes(data[:cut])


def write_fault_corpus(out_dir: str | Path) -> list[dict]:
    """Write the corpus (see the module docstring) and return the manifest entries."""
    import nibabel as nib

    out = Path(out_dir)
    images, masks, expected = out / "images", out / "masks", out / "expected"
    for folder in (images, masks, expected):
        folder.mkdir(parents=True, exist_ok=True)
    good_mask = (_smooth(0) > 127).astype(np.uint8)  # values 0/1, size H x W
    entries: list[dict] = []

    def add(kind: str, name: str, image_valid: bool, reason: str = "", stage: str = "", named: str = "image",
            pair_valid: bool | None = None, mask: np.ndarray | None = None, gray: np.ndarray | None = None) -> None:
        mask_name = Path(name).name.split(".")[0] + ".png"
        Image.fromarray(good_mask if mask is None else mask).save(masks / mask_name)
        entry = {"kind": kind, "image": f"images/{name}", "mask": f"masks/{mask_name}", "image_valid": image_valid,
                 "pair_valid": image_valid if pair_valid is None else pair_valid, "named": named, "reason": reason,
                 "stage": stage}
        if gray is not None:
            np.save(expected / f"{mask_name[:-4]}.npy", gray.astype(np.float32))
            entry["expected"] = f"expected/{mask_name[:-4]}.npy"
        entries.append(entry)

    # --- invalid: refused from the header
    (images / "empty.png").write_bytes(b"")
    add("0-byte file", "empty.png", False, "empty file", "header")
    png = BytesIO()
    Image.fromarray(_smooth(1).astype(np.uint8)).save(png, format="PNG")
    (images / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    add("truncated PNG", "truncated.png", False, "truncated PNG", "header")
    (images / "text.png").write_text("patient notes, not an image\n" * 20)
    add("text file named .png", "text.png", False, "not an image file", "header")
    (images / "garbage.dcm").write_bytes(bytes(range(256)) * 8)
    add("garbage named .dcm", "garbage.dcm", False, "not a readable DICOM", "header")
    _dicom_without_pixels(images / "no_pixels.dcm")
    add("DICOM without pixel data", "no_pixels.dcm", False, "not a readable DICOM", "header")
    Image.fromarray(np.full((1, 1), 128, np.uint8)).save(images / "one_pixel.png")
    add("1x1 image", "one_pixel.png", False, "too small", "header")
    _huge_png(images / "huge.png")
    add("20000x20000 image", "huge.png", False, "too large", "header")
    (images / "directory.png").mkdir(exist_ok=True)
    add("directory instead of a file", "directory.png", False, "is a directory", "header")
    add("path that does not exist", "missing.png", False, "does not exist", "header")

    # --- invalid: only decoding shows it
    jpeg = BytesIO()
    Image.fromarray(_smooth(2).astype(np.uint8)).save(jpeg, format="JPEG", quality=95)
    (images / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    add("truncated JPEG", "truncated.jpg", False, "cannot be decoded", "load")
    volume = _smooth(3).astype(np.float32)
    volume[3, 4], volume[10, 11], volume[20, 30] = np.nan, np.inf, -np.inf
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(images / "nan_inf.nii.gz"))
    add("NaN/Inf image (NIfTI)", "nan_inf.nii.gz", False, "NaN", "load")

    # --- valid but unusual: must be read correctly
    src = _smooth(4).astype(np.uint8)
    jpeg = BytesIO()
    Image.fromarray(src).save(jpeg, format="JPEG", quality=95)
    (images / "jpeg_named.png").write_bytes(jpeg.getvalue())
    add("JPEG named .png", "jpeg_named.png", True, gray=np.asarray(Image.open(BytesIO(jpeg.getvalue())), np.float32))
    gray16 = (np.arange(H * W, dtype=np.int64).reshape(H, W) * 2711 % 65536).astype(np.uint16)  # uses all 16 bits
    Image.fromarray(gray16).save(images / "gray16.png")
    add("16-bit PNG", "gray16.png", True, gray=gray16.astype(np.float32))
    rgb = np.stack([_smooth(5), 255 - _smooth(6), _smooth(7, 200.0)], -1).astype(np.uint8)
    alpha = (np.arange(H * W).reshape(H, W) % 256).astype(np.uint8)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(images / "rgba.png")
    add("RGBA PNG", "rgba.png", True, gray=(rgb.astype(np.float32) * _LUMA).sum(-1))
    colours = np.asarray([[200, 0, 0], [0, 150, 0], [0, 0, 250], [255, 255, 255]], np.uint8)
    index = (np.arange(H * W).reshape(H, W) // 7 % 4).astype(np.uint8)
    palette = Image.fromarray(index, "P")
    palette.putpalette(colours.reshape(-1).tolist() + [0] * (3 * 252))
    palette.save(images / "palette.png")
    add("palette PNG", "palette.png", True, gray=(colours[index].astype(np.float32) * _LUMA).sum(-1))

    # --- good images whose masks are bad
    Image.fromarray(_smooth(8).astype(np.uint8)).save(images / "mask_size.png")
    add("mask of another size", "mask_size.png", True, "does not fit", "header", named="mask", pair_valid=False,
        mask=np.zeros((H, W - 10), np.uint8))
    Image.fromarray(_smooth(9).astype(np.uint8)).save(images / "mask_values.png")
    bad_values = good_mask.copy()
    bad_values[:5, :5] = 7
    add("mask values outside the label set", "mask_values.png", True, "unexpected values", "load", named="mask",
        pair_valid=False, mask=bad_values)

    (out / "manifest.json").write_text(json.dumps(entries, indent=4) + "\n")
    # every image (the missing one too) as a MONAI datalist's test list, e.g. for the seg bundle's inference
    listed = {"training": [], "test": [str((out / e["image"]).absolute()) for e in entries]}
    (out / "inference_list.json").write_text(json.dumps(listed, indent=4) + "\n")
    return entries


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/fault_corpus.py OUT_DIR")
    written = write_fault_corpus(sys.argv[1])
    for e in written:
        state = "valid" if e["image_valid"] and e["pair_valid"] else f"INVALID ({e['stage']}: {e['reason']})"
        print(f"{e['kind']:36s} {e['image']:28s} {state}")
    print(f"{len(written)} kinds; manifest: {Path(sys.argv[1]) / 'manifest.json'}")
