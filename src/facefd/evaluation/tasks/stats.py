"""``task=stats data.root=DIR out=FILE.npz metric=...``: reference statistics of a folder (also what
``facefd fd --save-stats`` writes)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from facefd.data.images import check_statistics_source
from facefd.evaluation.tasks.common import loader_kwargs, require
from facefd.metrics.frechet_metric import FrechetDistance
from facefd.utils.checks import check_writable
from facefd.utils.errors import ConfigError


def save_statistics(metric: FrechetDistance, root: str | Path, out: str | Path, format: str = "facefd",
                    **loader: Any) -> Path:
    """Write the statistics of the images under ``root`` to ``out`` and print one line about them.

    Args:
        metric: the metric whose extractor makes the features (its real set is filled).
        root: the image folder.
        out: the ``.npz`` to write.
        format: ``facefd`` (mean/cov with fingerprint) or ``pytorch-fid`` (mu/sigma).
        **loader: batch size, workers, ``skip_bad_images``, ``num_samples``, ``seed``, ``cache_dir`` and the
            processes of :func:`facefd.evaluation.folder_stats.folder_statistics`.

    Returns:
        The written file.
    """
    from facefd.evaluation.folder_stats import folder_statistics

    stats = folder_statistics(metric, root, **loader)
    path = metric.save_reference(out, metadata=stats.metadata, format=format)
    print(f"{path}: {stats.count} images, {stats.mean.shape[0]}-d features" + ("" if format == "facefd" else f" ({format})"))
    return Path(path)


def run(cfg: DictConfig) -> str:
    """Check the folder and output, then write the folder's statistics."""
    if not cfg.data.get("root"):
        raise ConfigError("task=stats needs data.root=<image folder>")
    require(cfg, "out")
    check_statistics_source(cfg.data.root)  # before the extractor loads
    check_writable(cfg.out)
    metric = instantiate(cfg.metric)
    return str(save_statistics(metric, cfg.data.root, cfg.out, **loader_kwargs(cfg)))
