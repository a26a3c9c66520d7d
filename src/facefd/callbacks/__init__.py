"""Lightning callbacks: extractor and probe-head export, the k-NN probe, FDD during training."""
from facefd.utils.lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "ExportExtractor": "facefd.callbacks.export", "ExportProbeHeads": "facefd.callbacks.export_probe",
    "FDDCallback": "facefd.callbacks.fdd", "KNNProbe": "facefd.callbacks.knn_probe",
})
