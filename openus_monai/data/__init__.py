"""Data: synthetic ultrasound phantoms, readers of user data sets, datalists and splits.

- :func:`synthesize_dataset` writes the deterministic demo data set (images, masks, labels.csv, datalists).
- :func:`build_datalist` reads a user data set (``datalist.json``, ``labels.csv`` or folders) into
  training / validation / test lists with absolute paths; :func:`ensure_demo_data` supplies demo
  data where no data set is given.
- The pieces (readers, splits) are exported for bundle configs and CLIs.
"""

from .datalist import TASKS, build_datalist, read_records, records_to_entries
from .demo import default_demo_dir, ensure_demo_data, has_dataset
from .phantom import LESION_CLASSES, render_phantom
from .readers import (
    IMAGE_EXTENSIONS,
    is_image_file,
    read_datalist_json,
    read_labels_csv,
    scan_class_folders,
    scan_image_folder,
)
from .splits import assign_splits, split_validation, subset_by_label_ratio
from .synthetic import synthesize_dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "LESION_CLASSES",
    "TASKS",
    "assign_splits",
    "build_datalist",
    "default_demo_dir",
    "ensure_demo_data",
    "has_dataset",
    "is_image_file",
    "read_datalist_json",
    "read_labels_csv",
    "read_records",
    "records_to_entries",
    "render_phantom",
    "scan_class_folders",
    "scan_image_folder",
    "split_validation",
    "subset_by_label_ratio",
    "synthesize_dataset",
]
