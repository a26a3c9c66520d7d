"""Metrics: the Fréchet distance on pluggable features (FDD on DINO-faces features), KID, PRDC."""
from facefd.utils.lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "frechet_distance": "facefd.metrics.frechet", "psd_factor": "facefd.metrics.frechet",
    "FDD": "facefd.metrics.frechet_metric", "FrechetDistance": "facefd.metrics.frechet_metric",
    "GaussianStats": "facefd.metrics.stats", "StatisticsFileError": "facefd.metrics.stats",
    "CMMD": "facefd.metrics.mmd", "mmd_rbf": "facefd.metrics.mmd",
})
