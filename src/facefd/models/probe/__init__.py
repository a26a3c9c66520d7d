"""Attribute probes on frozen features (k-NN now; linear/MLP heads next)."""
from facefd.models.probe.knn import knn_attribute_accuracy, knn_attribute_probabilities

__all__ = ["knn_attribute_accuracy", "knn_attribute_probabilities"]
