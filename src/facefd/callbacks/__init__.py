"""Lightning callbacks."""
from facefd.callbacks.export import ExportExtractor

__all__ = ["ExportExtractor"]
