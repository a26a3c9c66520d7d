"""The real set of :class:`~facefd.callbacks.fdd.FDDCallback` from what a Lightning project has: a
statistics ``.npz``, a ``DataLoader``, a tensor of images or a folder. Their statistics are computed once,
every rank extracting its share on the trainer's device, and cached by extractor fingerprint and source
for the next run."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch
from torch.utils.data import DataLoader

from facefd.metrics.frechet_metric import FrechetDistance
from facefd.metrics.stats import GaussianStats

log = logging.getLogger(__name__)

#: What ``reference=`` takes.
Reference = Union[str, Path, DataLoader, torch.Tensor]


def check_reference(reference: Any) -> None:
    """One clear error for a reference the callback cannot use, before any training starts."""
    if isinstance(reference, (DataLoader, torch.Tensor)):
        if isinstance(reference, torch.Tensor) and (reference.ndim != 4 or reference.shape[0] < 2):
            raise ValueError(f"reference images must be [N >= 2, 3, H, W], got {tuple(reference.shape)}")
        return
    if not isinstance(reference, (str, Path)):
        raise TypeError(f"reference must be a statistics .npz, a folder of images, a DataLoader or a tensor of "
                        f"images, not {type(reference).__name__}")
    path = Path(reference).expanduser()
    if path.suffix == ".npz":
        if not path.is_file():
            raise FileNotFoundError(f"reference statistics {path} not found")
    elif not path.is_dir():
        raise FileNotFoundError(f"reference {path} is neither a statistics .npz nor a folder of images")


def source_key(reference: Reference) -> str:
    """What identifies the real images, for the cache: a folder's listing (names, sizes, times), a tensor's
    bytes, a DataLoader's dataset type and length and its first batch."""
    h = hashlib.sha256()
    if isinstance(reference, torch.Tensor):
        h.update(f"tensor {tuple(reference.shape)} {reference.dtype}".encode())
        h.update(reference.detach().cpu().contiguous().numpy().tobytes())
    elif isinstance(reference, DataLoader):
        h.update(f"loader {type(reference.dataset).__qualname__} {len(reference.dataset)}".encode())
        first = next(iter(_image_batches(reference)), None)
        if first is not None:
            h.update(first.detach().cpu().contiguous().numpy().tobytes())
    else:
        from facefd.data.images import list_images
        from facefd.models.probe.features import listing_fingerprint

        h.update(b"folder " + listing_fingerprint(list_images(reference)).encode())
    return h.hexdigest()


def _image_batches(loader: Any) -> Iterator[torch.Tensor]:
    """Image tensors of a loader's batches: a tensor, or the first element of a tuple/list, or ``["image"]``."""
    for batch in loader:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        elif isinstance(batch, dict):
            batch = batch.get("image", batch.get("images"))
        if not isinstance(batch, torch.Tensor):
            raise TypeError("a reference DataLoader must yield image tensors, (images, ...) tuples or {'image': ...}")
        yield batch


def _my_share(reference: Reference, rank: int, world: int, batch_size: int) -> Iterator[torch.Tensor]:
    """This rank's images: every ``world``-th batch, from ``rank`` on (uint8 for folders)."""
    if isinstance(reference, torch.Tensor):
        mine = reference[rank::world]
        for start in range(0, mine.shape[0], batch_size):
            yield mine[start:start + batch_size]
        return
    if isinstance(reference, DataLoader):
        for i, images in enumerate(_image_batches(reference)):
            if i % world == rank:
                yield images
        return
    from facefd.data.images import list_images
    from facefd.data.tensors import ImageTensors

    paths = list_images(reference)[rank::world]
    loader = DataLoader(ImageTensors(paths, None), batch_size=1)  # each image at its own size
    for image in loader:
        yield (image * 255).round().to(torch.uint8)


def reference_statistics(metric: FrechetDistance, reference: Reference, rank: int = 0, world: int = 1,
                         cache_dir: Optional[str | Path] = None, batch_size: int = 64,
                         device: Optional[torch.device] = None) -> GaussianStats:
    """Statistics of the real images under ``metric``'s extractor, from the cache when it holds them.

    Every rank calls this (it synchronises the metric's states when several processes run).

    Args:
        metric: the callback's metric; its real set is used and cleared again.
        reference: a folder, a ``DataLoader`` of images or a tensor ``[N, 3, H, W]`` (a ``.npz`` goes
            through :meth:`FrechetDistance.load_reference`, which checks its extractor).
        rank: this process's rank.
        world: the number of processes.
        cache_dir: where statistics are cached (``None``: not cached).
        batch_size: images per update for a tensor reference.
        device: where the images go (the trainer's device).

    Returns:
        The real set's mean, covariance and count.
    """
    cache = None
    if cache_dir is not None:
        key = hashlib.sha256(f"{metric.fingerprint}:{source_key(reference)}".encode()).hexdigest()[:24]
        cache = Path(cache_dir).expanduser() / f"reference-{key}.npz"
        if cache.is_file():
            log.info("reference statistics from the cache: %s", cache)
            return GaussianStats.load(cache)
    metric.clear_reference()
    metric.reset()
    for images in _my_share(reference, rank, world, batch_size):
        metric.update(images.to(device) if device is not None else images, real=True)
    metric.sync(should_sync=world > 1)  # every rank's share, gathered (a no-op in one process)
    try:
        stats = metric.statistics(True)
    finally:
        metric.unsync(should_unsync=world > 1)
    metric.reset()
    if cache is not None and rank == 0:
        stats.save(cache)
        log.info("reference statistics (%d images) cached in %s", stats.count, cache)
    return stats
