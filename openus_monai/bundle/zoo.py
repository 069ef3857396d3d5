"""MONAI model-zoo checks that run offline: the vendored metadata schema and where to find it.

``python -m monai.bundle verify_metadata`` downloads the schema named in ``metadata.json`` unless
``--filepath`` already holds it (MONAI's ``download_url`` then only checks the hash). This package
ships that schema, so the check needs no network::

    python -m monai.bundle verify_metadata --meta_file bundles/openus_seg/configs/metadata.json \\
        --filepath "$(python -c 'import openus_monai.bundle as b; print(b.schema_path())')" \\
        --hash_val 76e1add273836515d0bbb3bc71962474
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["SCHEMA_MD5", "SCHEMA_NAME", "schema_path"]

SCHEMA_NAME = "meta_schema_20240725.json"
# md5 (verify_metadata's default hash_type) of the vendored copy of MONAI's schema of that name
SCHEMA_MD5 = "76e1add273836515d0bbb3bc71962474"


def schema_path(check: bool = True) -> str:
    """Path of the vendored MONAI bundle metadata schema (``meta_schema_20240725.json``).

    Args:
        check: verify the file's md5 against :data:`SCHEMA_MD5`.

    Returns:
        the absolute path, for ``verify_metadata --filepath``.

    Raises:
        FileNotFoundError: the package was installed without its data files.
        RuntimeError: the file's md5 differs from :data:`SCHEMA_MD5` (edited or corrupted).
    """
    path = Path(__file__).resolve().parent / "schemas" / SCHEMA_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the vendored metadata schema is missing (reinstall openus-monai with its package data)")
    if check:
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        if md5 != SCHEMA_MD5:
            raise RuntimeError(f"{path}: md5 {md5} differs from the vendored schema's {SCHEMA_MD5}")
    return str(path)
