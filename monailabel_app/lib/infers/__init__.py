from .classification import BundleClassificationInferTask, bundle_class_names, is_classification_bundle

__all__ = ["BundleClassificationInferTask", "bundle_class_names", "is_classification_bundle"]
