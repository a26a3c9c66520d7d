"""Lightning callbacks."""
from facefd.callbacks.export import ExportExtractor
from facefd.callbacks.fdd import FDDCallback

__all__ = ["ExportExtractor", "FDDCallback"]
