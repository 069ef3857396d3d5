"""Test-only fault hook, active only when a test puts this folder on PYTHONPATH and sets the variables below.

``OPENUS_FAULT_SLOW_SAVE``: a file-name pattern (``fnmatch``). The first ``torch.save`` to the
``OPENUS_FAULT_SLOW_SAVE_NTH``-th distinct file name (1-based, default 1) matching it writes the first half of the serialized
bytes, flushes them to disk, writes the target's path into ``OPENUS_FAULT_MARKER`` and then sleeps, so that a
test can SIGKILL the process in the middle of a checkpoint write. Every other ``torch.save`` is unchanged.
Works for ``torch.save(obj, path)`` (Ignite's ``DiskSaver``) and ``torch.save(obj, file)``
(:func:`openus_monai.io.atomic_torch_save`, whose temporary file is named ``.<target>.*.tmp``).
"""

import os

if os.environ.get("OPENUS_FAULT_SLOW_SAVE"):
    import fnmatch
    import io
    import time

    import torch

    _pattern = os.environ["OPENUS_FAULT_SLOW_SAVE"]
    _nth = int(os.environ.get("OPENUS_FAULT_SLOW_SAVE_NTH", "1"))
    _marker = os.environ.get("OPENUS_FAULT_MARKER", "")
    _original_save = torch.save
    _seen: list = []

    def _target_name(f):
        name = os.fspath(f) if isinstance(f, (str, os.PathLike)) else getattr(f, "name", "")
        return os.path.basename(str(name))

    def _slow_save(obj, f, *args, **kwargs):
        name = _target_name(f)
        if not (fnmatch.fnmatch(name, _pattern) or fnmatch.fnmatch(name, f".{_pattern}.*")):
            return _original_save(obj, f, *args, **kwargs)
        final_name = name[1:].rsplit(".", 2)[0] if name.startswith(".") else name  # atomic writer's temp name
        if final_name not in _seen:
            _seen.append(final_name)
        if len(_seen) != _nth or _seen[-1] != final_name:  # not (a write of) the chosen file
            return _original_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        _original_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        handle = open(f, "wb") if isinstance(f, (str, os.PathLike)) else f
        handle.write(data[: len(data) // 2])
        handle.flush()
        os.fsync(handle.fileno())
        if _marker:
            with open(_marker + ".part", "w") as m:
                m.write(str(getattr(f, "name", f)))
            os.replace(_marker + ".part", _marker)
        time.sleep(3600)  # the test kills us here
        return None

    torch.save = _slow_save
