"""Feature statistics of an image folder (or a saved ``.npz``), and the distance between two of them."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from facefd.data.images import ImageFolderError, list_images
from facefd.metrics.frechet import frechet_distance
from facefd.metrics.frechet_metric import FrechetDistance
from facefd.metrics.stats import GaussianStats, StatisticsFileError


class MetricFeatures(nn.Module):
    """A metric's own feature step (:meth:`FrechetDistance.extract`: its input conversion, then its
    extractor) as a module for :func:`facefd.models.probe.features.extract_features`, fingerprinted with
    the conversion so cached features of one metric never serve another."""

    def __init__(self, metric: FrechetDistance) -> None:
        super().__init__()
        self.metric = metric
        self.input_size = getattr(metric.extractor, "input_size", None)
        conversion = "uint8" if getattr(metric, "uint8_input", False) else "float"
        self.fingerprint = f"{metric.fingerprint}:{conversion}"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.metric.extract(images)


def folder_statistics(metric: FrechetDistance, root: str | Path, batch_size: int = 64, num_workers: int = 2,
                      skip_bad_images: bool = False, num_samples: Optional[int] = None, seed: int = 0,
                      cache_dir: Optional[str | Path] = None, **parallel: Any) -> GaussianStats:
    """Mean, covariance and count of the features of the images under ``root`` (its real set is filled).

    Args:
        metric: the metric whose extractor makes the features.
        root: the image folder.
        batch_size: images per forward pass.
        num_workers: data loader workers.
        skip_bad_images: report unreadable images and go on.
        num_samples: a seeded sample of at most this many images (:func:`facefd.data.images.seeded_sample`).
        seed: the sample's seed.
        cache_dir: keep the features in this feature cache (and reuse them); ``None``: stream them, so
            memory stays that of one batch.
        **parallel: ``devices``, ``accelerator``, ``strategy`` of a multi-process extraction.

    Returns:
        The statistics; their metadata record the folder, the count and the sample.

    Example:
        >>> stats = folder_statistics(FrechetDistance(feature=2048), "faces/", num_samples=5000)  # doctest: +SKIP
    """
    from facefd.evaluation.image_sets import folder_sample
    from facefd.models.probe.features import FeatureCache, extract_features

    listed = len(list_images(root))
    paths = folder_sample(root, num_samples, seed, skip_bad_images)
    if len(paths) < 2:
        raise ImageFolderError(f"{root} has {len(paths)} usable image(s); a mean and covariance need at least 2")
    metric.reset()
    metric.clear_reference()
    device = metric.real_moments.device
    features = MetricFeatures(metric)
    options = dict(batch_size=batch_size, num_workers=num_workers, device=device, **parallel)
    name = f"features of {Path(root).name}"
    if cache_dir is not None:
        feats = FeatureCache(cache_dir).get(features, paths, name=name, **options)
        metric.update_features(feats.to(device), real=True)
    else:
        extract_features(features, paths, desc=name, sink=lambda rows: metric.update_features(rows.to(device), True),
                         **options)
    stats = metric.statistics(True)
    stats.metadata = {"source": str(root), "num_images": stats.count, "listed": listed,
                      "num_samples": num_samples, "seed": seed}
    return stats


def load_or_compute(metric: FrechetDistance, source: str | Path, assume_extractor: bool = False,
                    **kwargs) -> GaussianStats:
    """``.npz`` statistics (checked against the metric's extractor; a pytorch-fid / clean-fid file only
    with ``assume_extractor``) or a folder's statistics."""
    source = Path(source)
    if source.suffix == ".npz":
        stats = GaussianStats.load(source, extractor=metric.fingerprint if assume_extractor else None)
        if stats.fingerprint != metric.fingerprint:
            raise StatisticsFileError(f"{source} was computed with another extractor than metric=...; "
                                      "recompute it with this extractor")
        return stats
    return folder_statistics(metric, source, **kwargs)


def distance(metric: FrechetDistance, a: str | Path, b: str | Path, assume_extractor: bool = False,
             **kwargs) -> dict:
    sa = load_or_compute(metric, a, assume_extractor, **kwargs)
    sb = load_or_compute(metric, b, assume_extractor, **kwargs)
    value = frechet_distance(sa.mean, sa.cov, sb.mean.to(sa.mean), sb.cov.to(sa.cov))
    return {"fd": value, "a": str(a), "b": str(b), "n_a": sa.count, "n_b": sb.count,
            "num_samples": kwargs.get("num_samples"), "seed": kwargs.get("seed", 0),
            "extractor_fingerprint": metric.fingerprint}
