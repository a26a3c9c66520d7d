"""facefd: face-domain image statistics (DINO-faces features, FDD, probes, anonymization)."""
from facefd.models.extractor import FeatureExtractor, load_extractor

__version__ = "0.1.0"
__all__ = ["FeatureExtractor", "load_extractor", "__version__"]
