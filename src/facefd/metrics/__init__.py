"""Metrics: the Fréchet distance on pluggable features (FDD on DINO-faces features)."""
from facefd.metrics.frechet import frechet_distance, psd_factor
from facefd.metrics.frechet_metric import FDD, FrechetDistance
from facefd.metrics.stats import GaussianStats, StatisticsFileError

__all__ = ["FDD", "FrechetDistance", "GaussianStats", "StatisticsFileError", "frechet_distance", "psd_factor"]
