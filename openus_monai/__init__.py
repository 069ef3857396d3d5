"""OpenUS-MONAI: the OpenUS ultrasound foundation model as a MONAI-native toolkit."""

__version__ = "0.1.0"
