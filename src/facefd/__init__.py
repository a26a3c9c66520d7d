"""facefd: face-domain image statistics (DINO-faces features, FDD, probes, anonymization).

The public names load their modules on first use: ``import facefd`` imports neither torch nor Lightning.
"""
from facefd.utils.lazy import lazy_names

__version__ = "0.2.0"

__getattr__, __dir__, _names = lazy_names(__name__, {
    "AttributePredictor": "facefd.models.probe.predictor",
    "CMMD": "facefd.metrics.mmd",
    "FDD": "facefd.metrics.frechet_metric",
    "FDDCallback": "facefd.callbacks.fdd",
    "FeatureExtractor": "facefd.models.extractor",
    "FrechetDistance": "facefd.metrics.frechet_metric",
    "UntrustedCodeError": "facefd.utils.errors",
    "frechet_distance": "facefd.metrics.frechet",
    "load_extractor": "facefd.models.extractor",
    "trusting_code": "facefd.utils.settings",
})
__all__ = [*_names, "__version__"]
