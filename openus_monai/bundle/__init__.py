"""Helpers that the bundles' JSON configs call (``"$openus_monai.bundle.resolve_bundle_root('openus_seg')"``)."""

from .checkpoints import EpochSeedHandler, latest_checkpoint
from .paths import resolve_bundle_root
from .pretrain import pretraining_datalist, world_size
from .zoo import SCHEMA_MD5, schema_path

__all__ = [
    "EpochSeedHandler", "latest_checkpoint", "pretraining_datalist", "resolve_bundle_root", "SCHEMA_MD5", "schema_path",
    "world_size",
]
