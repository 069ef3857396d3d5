from .classification import BundleClassificationInferTask, is_classification_bundle

__all__ = ["BundleClassificationInferTask", "is_classification_bundle"]
