"""Attribute probes on frozen features: k-NN (training-free), linear / MLP heads, the predictor."""
from facefd.models.probe.features import FeatureCache, extract_features
from facefd.models.probe.heads import ProbeHeads
from facefd.models.probe.knn import knn_attribute_accuracy, knn_attribute_probabilities
from facefd.models.probe.module import ProbeModule
from facefd.models.probe.predictor import AttributePredictor, HeadsFileError, load_heads, save_heads

__all__ = [
    "AttributePredictor", "FeatureCache", "HeadsFileError", "ProbeHeads", "ProbeModule", "extract_features",
    "knn_attribute_accuracy", "knn_attribute_probabilities", "load_heads", "save_heads",
]
