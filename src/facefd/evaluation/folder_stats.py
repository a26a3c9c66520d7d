"""Feature statistics of an image folder (or a saved ``.npz``), and the distance between two of them."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from facefd.data.images import ImageFolderError, drop_bad_images, list_images
from facefd.data.tensors import ImageTensors, collate_images, size_groups
from facefd.metrics.frechet import frechet_distance
from facefd.metrics.frechet_metric import FrechetDistance
from facefd.metrics.stats import GaussianStats, StatisticsFileError


def folder_statistics(metric: FrechetDistance, root: str | Path, batch_size: int = 64, num_workers: int = 2,
                      skip_bad_images: bool = False, max_images: Optional[int] = None) -> GaussianStats:
    """Stream every image under ``root`` through the metric's extractor; return mean/cov/count."""
    paths = list_images(root)
    if max_images:
        paths = paths[:max_images]
    paths = drop_bad_images(paths, skip_bad_images)
    if len(paths) < 2:
        raise ImageFolderError(f"{root} has {len(paths)} usable image(s); a mean and covariance need at least 2")
    size = getattr(metric.extractor, "input_size", None)
    loader = DataLoader(ImageTensors(paths, size), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=collate_images)  # an extractor without input_size sees each image's own size
    metric.reset()
    metric.clear_reference()
    device = metric.real_moments.device
    for batch in tqdm(loader, desc=f"features of {Path(root).name}", leave=False):
        for _, images in size_groups(batch):  # mixed sizes: one update per size
            metric.update(images.to(device), real=True)
    stats = metric.statistics(True)
    stats.metadata = {"source": str(root), "num_images": stats.count}
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
            "extractor_fingerprint": metric.fingerprint}
