"""Data: synthetic ultrasound phantoms, readers of user data sets, datalists and splits.

- :func:`synthesize_dataset` writes the deterministic demo data set (images, masks, labels.csv, datalists).
- :func:`build_datalist` reads a user data set (``datalist.json``, ``labels.csv`` or folders) into
  training / validation / test lists with absolute paths; :func:`ensure_demo_data` supplies demo
  data where no data set is given.
- :func:`validate_datalist` checks every file of a datalist from its header up front, and
  :class:`CheckedCacheDataset` catches what only decoding shows; :class:`InvalidFiles` stops the run at
  invalid files or skips and reports them (``skip_invalid``).
- :func:`inference_datalist` and :func:`pretraining_datalist` list the images a run uses;
  :mod:`~openus_monai.data.labels` maps class names to indices and balances classes.
- :func:`image_readers` gives MONAI readers that refuse invalid files before decoding.
- The pieces (readers, splits) are exported for bundle configs and CLIs.
"""

from .catalog import catalog_table, find_dataset, load_catalog
from .corpus import build_corpus
from .dataset import CheckedCacheDataset, first_loadable
from .datalist import TASKS, build_datalist, read_records, records_to_entries
from .dedup import dedup
from .demo import DatasetNotFoundError, check_dataset_dir, default_demo_dir, ensure_demo_data, has_dataset, is_demo_request
from .entries import first_n, inference_datalist, labeled, monitor_datalist, pretraining_datalist
from .checked_readers import CheckedITKReader, CheckedNibabelReader, CheckedPILReader, image_readers, is_nifti, source_path
from .labels import BALANCE_MODES, ClassNames, balanced_sampler, class_weights, encode_labels, labeled_split, read_class_names
from .formats import LoadFramed, iter_frames, read_frame
from .phantom import LESION_CLASSES, render_phantom
from .prepare import prepare
from .readers import (
    IMAGE_EXTENSIONS,
    is_image_file,
    read_datalist_json,
    read_labels_csv,
    scan_class_folders,
    scan_image_folder,
)
from .splits import assign_splits, group_splits, split_validation, subset_by_label_ratio
from .synthetic import synthesize_dataset
from .validation import (
    InvalidDataError,
    InvalidFiles,
    InvalidFilesReportHandler,
    InvalidImageError,
    check_array,
    check_image,
    check_pair,
    read_header,
    validate_datalist,
)

__all__ = [
    "LoadFramed",
    "build_corpus",
    "catalog_table",
    "dedup",
    "find_dataset",
    "group_splits",
    "iter_frames",
    "load_catalog",
    "prepare",
    "read_frame",
    "BALANCE_MODES",
    "CheckedCacheDataset",
    "first_loadable",
    "CheckedITKReader",
    "CheckedNibabelReader",
    "CheckedPILReader",
    "ClassNames",
    "balanced_sampler",
    "class_weights",
    "encode_labels",
    "first_n",
    "image_readers",
    "inference_datalist",
    "is_nifti",
    "labeled",
    "labeled_split",
    "pretraining_datalist",
    "read_class_names",
    "source_path",
    "IMAGE_EXTENSIONS",
    "InvalidDataError",
    "InvalidFiles",
    "InvalidFilesReportHandler",
    "InvalidImageError",
    "LESION_CLASSES",
    "TASKS",
    "assign_splits",
    "build_datalist",
    "check_array",
    "check_image",
    "check_pair",
    "DatasetNotFoundError",
    "check_dataset_dir",
    "default_demo_dir",
    "ensure_demo_data",
    "is_demo_request",
    "has_dataset",
    "is_image_file",
    "read_datalist_json",
    "read_header",
    "read_labels_csv",
    "read_records",
    "records_to_entries",
    "monitor_datalist",
    "render_phantom",
    "scan_class_folders",
    "scan_image_folder",
    "split_validation",
    "subset_by_label_ratio",
    "synthesize_dataset",
    "validate_datalist",
]
