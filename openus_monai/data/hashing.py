"""Perceptual hashes of ultrasound frames and an index that finds near-identical hashes without all pairs.

- :func:`phash`: 64-bit DCT hash of a gray frame after trimming its dark border; robust to resizing,
  re-encoding (JPEG), brightness/contrast changes and mild crops;
- :func:`hamming`: bit distances between hashes;
- :func:`near_pairs`: every pair of hashes within a Hamming radius through multi-index hashing: the
  64 bits are cut into bands; two hashes within ``radius`` agree within ``radius // bands`` bits on
  at least one band (pigeonhole), so only bucket neighbours of each band are compared. Cost grows with
  the number of hashes times the bucket occupancy, not with the number of pairs.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
from scipy.fft import dctn

__all__ = ["HASH_BITS", "hamming", "near_pairs", "phash", "trim_border"]

HASH_BITS = 64
_BANDS = 4
_BAND_BITS = HASH_BITS // _BANDS


def trim_border(frame: np.ndarray, level: float = 0.04) -> np.ndarray:
    """The frame cropped to the bounding box of pixels brighter than ``level`` x its maximum.

    Ultrasound frames sit in dark margins of varying width; trimming them makes the hash follow the
    image content when a copy was cropped or padded differently. A frame with nothing above the level
    is returned whole.
    """
    f = np.asarray(frame)
    if f.size == 0:
        return f
    mask = f > level * float(f.max())
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) < 2 or len(cols) < 2:
        return f
    return f[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def phash(frame: np.ndarray, trim: bool = True) -> np.uint64:
    """64-bit perceptual hash of a 2D gray frame.

    The (border-trimmed) frame is resized to 32 x 32 (area averaging), the 2D DCT taken, and each of
    the 8 x 8 lowest-frequency coefficients (the DC term replaced by the mean of the others) set to
    whether it exceeds their median. Brightness scaling changes every coefficient alike, so the bits
    stay; resizing and JPEG change high frequencies, which are not used.

    Args:
        frame: ``[H, W]`` array (any dtype).
        trim: trim the dark border first (:func:`trim_border`).

    Returns:
        the hash as a ``numpy.uint64``.
    """
    from PIL import Image

    f = np.asarray(frame, dtype=np.float32)
    if trim:
        f = trim_border(f)
    small = np.asarray(Image.fromarray(f, mode="F").resize((32, 32), Image.Resampling.BOX), dtype=np.float64)
    low = dctn(small, norm="ortho")[:8, :8].ravel()
    low[0] = low[1:].mean()
    bits = low > np.median(low[1:])
    return np.uint64(int("".join("1" if b else "0" for b in bits), 2))


def hamming(a: np.ndarray | np.uint64, b: np.ndarray | np.uint64) -> np.ndarray:
    """Bit distance between hashes (broadcasting ``uint64`` arrays)."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))).astype(np.int64)


def _masks(bits: int, radius: int) -> np.ndarray:
    """Every ``bits``-bit XOR mask with at most ``radius`` bits set."""
    out = [0]
    for r in range(1, radius + 1):
        out.extend(sum(1 << i for i in combo) for combo in combinations(range(bits), r))
    return np.asarray(out, dtype=np.uint64)


def near_pairs(hashes: np.ndarray, radius: int, queries: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs of hashes within ``radius`` bits (multi-index hashing on 4 bands of 16 bits).

    Args:
        hashes: ``[N]`` uint64 hashes (the index).
        radius: largest Hamming distance of a pair (exact for radius < 12: every such pair is found).
        queries: ``[M]`` uint64 hashes to look up in the index; None pairs ``hashes`` with themselves.

    Returns:
        ``(i, j, distance)``: with ``queries``, ``i`` indexes queries and ``j`` the index; without,
        ``i < j`` both index ``hashes``. Each pair once.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    q = hashes if queries is None else np.asarray(queries, dtype=np.uint64)
    per_band = radius // _BANDS
    masks = _masks(_BAND_BITS, per_band)
    band_mask = np.uint64((1 << _BAND_BITS) - 1)
    found_i, found_j = [], []
    for b in range(_BANDS):
        shift = np.uint64(b * _BAND_BITS)
        keys = (hashes >> shift) & band_mask
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        qkeys = (q >> shift) & band_mask
        for m in masks:
            probe = qkeys ^ m
            lo = np.searchsorted(sorted_keys, probe, side="left")
            hi = np.searchsorted(sorted_keys, probe, side="right")
            n = hi - lo
            if not n.any():
                continue
            qi = np.repeat(np.arange(len(q)), n)
            # positions lo..hi-1 of every query, flattened
            offsets = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
            qj = order[np.repeat(lo, n) + offsets]
            near = hamming(q[qi], hashes[qj]) <= radius  # filter now: memory holds pairs, not candidates
            if queries is None:
                near &= qi < qj
            found_i.append(qi[near])
            found_j.append(qj[near])
    if not found_i:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    i, j = np.concatenate(found_i), np.concatenate(found_j)
    pair = np.unique(i.astype(np.int64) * len(hashes) + j)
    i, j = pair // len(hashes), pair % len(hashes)
    return i, j, hamming(q[i], hashes[j])
