"""Attribute probes on frozen features: k-NN (training-free), linear / MLP heads, the predictor."""
from facefd.models.probe.features import FeatureCache, extract_features
from facefd.models.probe.heads import ProbeHeads
from facefd.models.probe.knn import (attribute_scores, knn_attribute_accuracy, knn_attribute_probabilities,
                                    majority_accuracy)
from facefd.models.probe.module import ProbeModule
from facefd.models.probe.predictor import AttributePredictor, HeadsFileError, load_heads, save_heads

__all__ = [
    "AttributePredictor", "FeatureCache", "HeadsFileError", "ProbeHeads", "ProbeModule", "attribute_scores",
    "extract_features", "knn_attribute_accuracy", "knn_attribute_probabilities", "load_heads", "majority_accuracy", "save_heads",
]
