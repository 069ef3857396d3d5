"""Helpers that the bundles' JSON configs call (``"$openus_monai.bundle.resolve_bundle_root('openus_seg')"``)."""

from .paths import resolve_bundle_root

__all__ = ["resolve_bundle_root"]
