"""``CheckedCacheDataset``: MONAI's ``CacheDataset`` that stops on, or skips, files that fail to load.

The up-front check (:func:`~openus_monai.data.validation.validate_datalist`) reads headers only; what only
decoding shows (a truncated JPEG, NaN values, a mask with values outside the label set) surfaces when the
transforms run. MONAI's datasets pass such an error on with the transform's name; this one finds the
:class:`~openus_monai.data.validation.InvalidImageError` in it (the readers of
:func:`~openus_monai.data.image_readers` and the checking transforms raise one naming the file)
and applies the run's :class:`~openus_monai.data.validation.InvalidFiles` policy:

- while caching (before the first epoch): every failure is collected; ``skip=False`` raises one error
  listing them all, ``skip=True`` drops those items (``len(dataset)`` is then the number of good items);
- items not cached (``cache_rate < 1``), loaded in DataLoader workers: ``skip=False`` raises the file's
  error; ``skip=True`` records it and returns the next item that loads instead, so that an epoch keeps its
  length (the record, kept in a file, reaches the report from worker processes too).

Any other exception is not about the input and is raised as is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import CacheDataset

from ..terminal import show_progress
from .validation import InvalidFiles, InvalidImageError, find_invalid

__all__ = ["CheckedCacheDataset", "first_loadable"]

logger = logging.getLogger(__name__)


class _Failed:
    """A cache slot whose item failed to load."""

    __slots__ = ("error",)

    def __init__(self, error) -> None:
        self.error = error


class CheckedCacheDataset(CacheDataset):
    """A ``CacheDataset`` that applies an :class:`~openus_monai.data.validation.InvalidFiles` policy to
    items whose files fail to load (see the module docstring).

    Args:
        data: datalist entries.
        transform: the transforms (a ``Compose``, as for ``CacheDataset``).
        invalid_files: the run's policy and report (default: stop at invalid files).
        max_substitutes: for an uncached item that fails with ``skip=True``: how many following items
            to try in its place before giving up.
        kwargs: ``CacheDataset`` arguments (``cache_rate``, ``num_workers``, ...).

    Raises:
        InvalidDataError: (construction) items failed while caching and ``skip`` is False.
        ValueError: (construction) every item failed while caching.
    """

    def __init__(
        self,
        data: Sequence,
        transform: Sequence[Callable] | Callable | None = None,
        invalid_files: InvalidFiles | None = None,
        max_substitutes: int = 16,
        **kwargs: Any,
    ) -> None:
        self.invalid_files = invalid_files if invalid_files is not None else InvalidFiles()
        self.max_substitutes = int(max_substitutes)
        kwargs.setdefault("progress", show_progress())  # caching bar for a terminal only
        super().__init__(data, transform, **kwargs)

    def _load_cache_item(self, idx: int):
        try:
            return super()._load_cache_item(idx)
        except Exception as e:
            error = find_invalid(e)
            if error is None:
                raise
            return _Failed(error)

    def set_data(self, data: Sequence) -> None:
        super().set_data(data)
        if self.runtime_cache not in (False, None) or self.hash_as_key:
            return  # filled lazily, or keyed by hash: failures surface per item
        failed = [i for i, item in enumerate(self._cache) if isinstance(item, _Failed)]
        if not failed:
            return
        if len(failed) == len(self.data):
            errors = "\n  ".join(str(self._cache[i].error) for i in failed[:10])
            raise ValueError(f"none of the {len(self.data)} items could be loaded:\n  {errors}")
        self.invalid_files.handle([self._cache[i].error for i in failed], "load")
        bad = set(failed)
        kept = [i for i in range(len(self._cache)) if i not in bad]
        self.data = [self.data[i] for i in kept] + list(self.data[len(self._cache):])
        self._cache = [self._cache[i] for i in kept]
        self.cache_num = len(self._cache)
        logger.info("dataset: %d items after dropping %d that failed to load", len(self.data), len(failed))

    def _transform(self, index: int):
        try:
            return super()._transform(index)
        except Exception as e:
            error = find_invalid(e)
            if error is None:
                raise
            if not self.invalid_files.skip:
                raise InvalidImageError(error.path, error.reason) from e
            self.invalid_files.record([error], "load")
        for step in range(1, min(len(self.data), self.max_substitutes + 1)):
            other = (index + step) % len(self.data)
            try:
                return super()._transform(other)
            except Exception as e:
                error = find_invalid(e)
                if error is None:
                    raise
                self.invalid_files.record([error], "load")
        raise ValueError(f"item {index} and the {self.max_substitutes} items after it all failed to load (see the skipped files report)")


def first_loadable(entries: Sequence[dict], transform: Callable, n: int, key: str = "image") -> torch.Tensor:
    """``key`` of the first ``n`` entries that load, stacked: a fixed batch (e.g. the pretraining monitor's probe).

    Files that fail to load (an invalid-file error) are passed over silently: the run's dataset applies and
    reports the invalid-file policy; other errors are raised.

    Args:
        entries: datalist entries, in the order to try them.
        transform: ``entry -> dict`` (e.g. a ``Compose`` loading and resizing the image).
        n: how many to take (fewer when fewer load).
        key: the entry of the transformed dict to stack.

    Returns:
        ``[n, ...]`` tensor (plain, no metadata).

    Raises:
        ValueError: none of the entries loaded.
    """
    out: list[torch.Tensor] = []
    for entry in entries:
        if len(out) >= n:
            break
        try:
            out.append(torch.as_tensor(transform(dict(entry))[key]).as_subclass(torch.Tensor))
        except Exception as e:
            if find_invalid(e) is None:
                raise
    if not out:
        raise ValueError(f"none of the {len(entries)} entries could be loaded")
    return torch.stack(out)
