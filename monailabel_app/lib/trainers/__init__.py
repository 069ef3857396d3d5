from .bundle import OpenUSBundleTrainTask
from .classification import OpenUSClassificationTrainTask

__all__ = ["OpenUSBundleTrainTask", "OpenUSClassificationTrainTask"]
