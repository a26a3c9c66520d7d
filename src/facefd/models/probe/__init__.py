"""Attribute probes on frozen features: k-NN (training-free), linear / MLP heads, the predictor."""
from facefd.utils.lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "FeatureCache": "facefd.models.probe.features", "extract_features": "facefd.models.probe.features",
    "ProbeHeads": "facefd.models.probe.heads",
    "attribute_scores": "facefd.models.probe.knn", "knn_attribute_accuracy": "facefd.models.probe.knn",
    "knn_attribute_probabilities": "facefd.models.probe.knn", "majority_accuracy": "facefd.models.probe.knn",
    "ProbeModule": "facefd.models.probe.module",
    "AttributePredictor": "facefd.models.probe.predictor", "HeadsFileError": "facefd.models.probe.predictor",
    "load_heads": "facefd.models.probe.predictor", "save_heads": "facefd.models.probe.predictor",
})
