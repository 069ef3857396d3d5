from .bundle import OpenUSBundleTrainTask

__all__ = ["OpenUSBundleTrainTask"]
