"""Helpers that the bundles' JSON configs call (``"$openus_monai.bundle.resolve_bundle_root('openus_seg')"``)."""

from .paths import resolve_bundle_root
from .pretrain import latest_checkpoint, pretraining_datalist, world_size

__all__ = ["latest_checkpoint", "pretraining_datalist", "resolve_bundle_root", "world_size"]
