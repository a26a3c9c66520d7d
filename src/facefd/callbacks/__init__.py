"""Lightning callbacks."""
from facefd.callbacks.export import ExportExtractor
from facefd.callbacks.fdd import FDDCallback
from facefd.callbacks.knn_probe import KNNProbe

__all__ = ["ExportExtractor", "FDDCallback", "KNNProbe"]
