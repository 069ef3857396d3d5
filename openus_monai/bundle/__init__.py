"""What is about the bundles themselves: where a bundle lives (:func:`resolve_bundle_root`), the vendored
model-zoo schema (:func:`schema_path`) and small config expressions (:func:`world_size`, :func:`pick_metrics`).

The code the configs run lives on its own floor (``openus_monai.data``, ``.handlers``, ``.metrics``, ...);
the names below that configs have always called as ``openus_monai.bundle.NAME`` are re-exported from there.
"""

from ..data.entries import pretraining_datalist
from ..handlers.resume import EpochSeedHandler, MidEpochResumeHandler
from ..io import latest_checkpoint
from .config import optional, pick_metrics, refuse_encoder_options, set_num_threads, world_size
from .paths import resolve_bundle_root
from .zoo import SCHEMA_MD5, schema_path

__all__ = [
    "EpochSeedHandler",
    "MidEpochResumeHandler",
    "SCHEMA_MD5",
    "latest_checkpoint",
    "optional",
    "pick_metrics",
    "refuse_encoder_options",
    "pretraining_datalist",
    "resolve_bundle_root",
    "schema_path",
    "set_num_threads",
    "world_size",
]
