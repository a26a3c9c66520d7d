"""Lightning callbacks."""
from facefd.callbacks.export import ExportExtractor
from facefd.callbacks.export_probe import ExportProbeHeads
from facefd.callbacks.fdd import FDDCallback
from facefd.callbacks.knn_probe import KNNProbe

__all__ = ["ExportExtractor", "ExportProbeHeads", "FDDCallback", "KNNProbe"]
