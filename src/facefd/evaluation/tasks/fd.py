"""``task=fd a=DIR_OR_NPZ b=DIR_OR_NPZ metric=...``: the Fréchet distance of two sets (``facefd fd`` runs
the same functions)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from hydra.utils import instantiate
from omegaconf import DictConfig

from facefd.data.images import check_statistics_source
from facefd.evaluation.tasks.common import loader_kwargs, require
from facefd.metrics.frechet_metric import FrechetDistance
from facefd.metrics.stats import GaussianStats
from facefd.utils.checks import check_writable


def check_sources(a: str | Path, b: Optional[str | Path], *outputs: Optional[str | Path]) -> None:
    """Before any model loads: each source is a folder with images or an existing ``.npz``, and each
    output file can be written."""
    for source in (a, b):
        if source is not None:
            check_statistics_source(source)
            if Path(source).suffix == ".npz":  # its arrays checked now, before the other folder's features
                GaussianStats.load(Path(source).expanduser(), extractor="checked later against the extractor")
    for out in outputs:
        if out:
            check_writable(out)


def compute(metric: FrechetDistance, a: str | Path, b: str | Path, out: Optional[str | Path] = None,
            assume_extractor: bool = False, **loader: Any) -> dict[str, Any]:
    """The distance of ``a`` and ``b`` (folders or statistics files); written as JSON to ``out`` if given.

    Args:
        metric: the metric whose extractor makes the features.
        a: the first folder or ``.npz`` (the real set).
        b: the second folder or ``.npz``.
        out: a JSON file for the result, or ``None``.
        assume_extractor: read statistics files without a fingerprint as made with ``metric``'s extractor.
        **loader: batch size, workers, ``skip_bad_images``, ``num_samples``, ``seed``, ``cache_dir`` and the
            processes of :func:`facefd.evaluation.folder_stats.folder_statistics`.

    Returns:
        ``{"fd": float, "n_a": int, "n_b": int, ...}``.
    """
    from facefd.evaluation.folder_stats import distance

    result = distance(metric, a, b, assume_extractor=assume_extractor, **loader)
    if out:
        from facefd.utils.files import write_json

        write_json(out, result)
    return result


def run(cfg: DictConfig) -> dict[str, Any]:
    """Check the sources, build ``cfg.metric`` and print the distance."""
    require(cfg, "a", "b")
    check_sources(cfg.a, cfg.b, cfg.get("out"))
    metric = instantiate(cfg.metric)
    result = compute(metric, cfg.a, cfg.b, out=cfg.get("out"), **loader_kwargs(cfg))
    print(f"FD = {result['fd']:.6g}  (n_a = {result['n_a']}, n_b = {result['n_b']})")
    return result
