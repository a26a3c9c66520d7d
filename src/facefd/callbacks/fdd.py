"""Log the Fréchet distance of a model's samples against reference statistics while it trains."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

import lightning.pytorch as pl
import torch

from facefd.callbacks.reference import Reference, check_reference, reference_statistics
from facefd.metrics.frechet_metric import FDD, FrechetDistance
from facefd.utils.distributed import destroy_process_group_at_exit

log = logging.getLogger(__name__)

SampleFn = Callable[[pl.LightningModule, int], torch.Tensor]


def _default_sample(pl_module: pl.LightningModule, n: int) -> torch.Tensor:
    if not hasattr(pl_module, "sample"):
        raise AttributeError(f"{type(pl_module).__name__} has no sample(n) method: pass sample_fn=(module, n) -> images")
    return pl_module.sample(n)


class FDDCallback(pl.Callback):
    """At the end of every ``every_n_epochs``-th validation epoch: draw ``num_samples`` images from the
    module, compute their Fréchet distance to ``reference`` (an ``.npz`` of real statistics), and log it
    as ``name`` -- usable by ``ModelCheckpoint(monitor=name)`` and early stopping.

    Under DDP each rank draws its share of the samples; the metric state is gathered in ``compute``,
    which therefore runs on every rank, and every rank logs the same value.

    Args:
        reference: the real set: a statistics file made with the same extractor (``evaluate.py task=stats``),
            or real images -- a ``DataLoader`` (of image tensors, ``(images, ...)`` tuples or
            ``{"image": ...}``), a tensor ``[N, 3, H, W]`` or a folder. Images are turned into statistics
            once, in ``setup``, every DDP rank extracting its share on the trainer's device, and cached
            in ``cache_dir`` by extractor fingerprint and source for the next run.
        cache_dir: where image references' statistics are cached (``None``: recomputed every run).
        num_samples: images per evaluation (FD depends on N: keep it fixed across a run).
        metric: the ``FrechetDistance`` to use; or ``extractor_path`` for :class:`FDD`.
        sample_fn: ``(pl_module, n) -> images`` (uint8, or float in [0, 1]); default ``pl_module.sample(n)``.
        every_n_epochs: evaluate every this many validation epochs.
        extractor_path: an exported extractor; the callback builds :class:`facefd.FDD` on it.
        name: the logged key.

    Example:
        >>> import lightning.pytorch as pl
        >>> from facefd import FDDCallback
        >>> callback = FDDCallback(tiny_stats, num_samples=64, extractor_path=tiny_extractor, name="val/fdd")
        >>> trainer = pl.Trainer(callbacks=[callback], max_epochs=1, logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False)
        >>> callback.name
        'val/fdd'
    """

    def __init__(self, reference: Reference, num_samples: int, every_n_epochs: int = 1,
                 sample_fn: Optional[SampleFn] = None, metric: Optional[FrechetDistance] = None,
                 extractor_path: Optional[str | Path] = None, name: str = "val/fdd", batch_size: int = 64,
                 cache_dir: Optional[str | Path] = "~/.cache/facefd/reference") -> None:
        check_reference(reference)
        if metric is None:
            if extractor_path is None:
                raise ValueError("FDDCallback needs metric=FrechetDistance(...) or extractor_path=<extractor>")
            metric = FDD(extractor_path, normalize=True)
        if num_samples < 2:
            raise ValueError("num_samples must be at least 2")
        self.reference, self.num_samples, self.every_n_epochs = reference, num_samples, every_n_epochs
        self.sample_fn = sample_fn or _default_sample
        self.metric, self.name, self.batch_size, self.cache_dir = metric, name, batch_size, cache_dir
        if isinstance(reference, (str, Path)) and Path(reference).suffix == ".npz":
            self.metric.load_reference(Path(reference).expanduser())  # checked now, before any training

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.metric.to(pl_module.device)
        destroy_process_group_at_exit()
        if self.metric._reference is None:  # images: their statistics once, every rank its share
            stats = reference_statistics(self.metric, self.reference, trainer.global_rank, trainer.world_size,
                                         self.cache_dir, self.batch_size, pl_module.device)
            self.metric.use_reference(stats, source=f"reference statistics of {type(self.reference).__name__}")

    def _share(self, trainer: pl.Trainer) -> int:
        world, rank = trainer.world_size, trainer.global_rank
        return self.num_samples // world + int(rank < self.num_samples % world)

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self.metric.reset()
        remaining = self._share(trainer)
        while remaining > 0:
            n = min(self.batch_size, remaining)
            images = self.sample_fn(pl_module, n)
            if images.shape[0] != n:
                raise ValueError(f"sample_fn returned {images.shape[0]} images, {n} were asked for")
            self.metric.update(images.to(pl_module.device), real=False)
            remaining -= n
        value = self.metric.compute()  # collective under DDP: every rank gets here
        pl_module.log(self.name, value.float(), on_step=False, on_epoch=True, sync_dist=False)
        log.info("%s = %.4f (%d samples vs %d reference)", self.name, value.item(),
                 self.metric.last_counts["fake"], self.metric.last_counts["real"])
        self.metric.reset()
