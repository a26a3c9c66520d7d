"""Online attribute probe (k-NN or linear): shows during self-supervised training whether the features
improve on the network the run started from."""
from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from facefd.callbacks.learning_curve import INITIAL_EPOCH, learning_summary, write_learning_curve
from facefd.data.dataset import FaceImageDataset
from facefd.models.batchnorm import recalibrated_batchnorm
from facefd.models.probe.knn import attribute_scores, knn_attribute_probabilities, majority_accuracy
from facefd.models.probe.logistic import fit_logistic_probe

log = logging.getLogger(__name__)

SCORES = ("acc", "bacc", "auroc")
METHODS = ("knn", "linear")


class KNNProbe(pl.Callback):
    """Every ``every_n_epochs`` epochs: features of the train split (bank) and the val split (queries)
    through ``pl_module(images)`` on the data module's eval transform, then per attribute either the
    k-NN vote (``method="knn"``, DINO's eval_knn) or a logistic-regression linear probe fitted on the
    bank (``method="linear"``). Logs ``{prefix}/{method}_{acc|bacc|auroc}`` (mean over attributes of
    accuracy, balanced accuracy and AUROC) and ``{prefix}/{method}_{acc|auroc}/<attribute>``.

    ``baseline=True`` scores the initial network too, before the first step, with its BatchNorm
    statistics recalibrated on the train split (a random network's BN statistics are meaningless, and a
    trained one's come from augmented crops), logged as epoch -1; a run started from released weights
    (``backbone.weights=``) is scored as loaded, so epoch -1 is what that network scores. At the end of training it writes
    ``learning_curve.{json,png}`` next to the first logger's files and logs one line: initial -> final.

    ``extra_methods=["linear"]`` scores the same features with the other method too (``{prefix}/linear_*``),
    shown in the summary line and the curve: the k-NN vote follows the features' largest directions, a
    linear probe reads all of them. Decoded eval images are kept between measurements up to ``cache_bytes``.

    Needs a data module with attribute labels (``FaceImageDataModule`` with a CelebA-style file; the
    sample set has them). Every DDP rank computes the same value (the work is not split).
    """

    def __init__(self, every_n_epochs: int = 1, k: int = 20, temperature: float = 0.07, batch_size: int = 256,
                 max_bank: Optional[int] = None, prefix: str = "val", method: str = "knn", l2: float = 1e-3,
                 baseline: bool = True, recalibrate_bn_batches: int = 20, score: str = "auroc",
                 loss_key: str = "train/loss_epoch", learning_curve: bool = True,
                 num_workers: Optional[int] = None, extra_methods: Sequence[str] = (),
                 cache_bytes: int = 1 << 30) -> None:
        for name in (method, *extra_methods):
            if name not in METHODS:
                raise ValueError(f"method must be one of {METHODS}, got {name!r}")
        #: also scored on the same features each time (logged as {prefix}/{name}_{score}); the summary line
        #: and the curve show them next to the headline method
        self.extra_methods = [m for m in dict.fromkeys(extra_methods) if m != method]
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        self.method, self.l2, self.score = method, l2, score
        self.every_n_epochs, self.k, self.temperature = every_n_epochs, k, temperature
        self.batch_size, self.max_bank, self.prefix = batch_size, max_bank, prefix
        self.baseline, self.recalibrate_bn_batches = baseline, recalibrate_bn_batches
        self.loss_key, self.learning_curve = loss_key, learning_curve
        self.num_workers = num_workers  # image decoding workers; None: the data module's (idle between epochs)
        self._num_workers = 0
        #: decoded eval images kept between measurements (up to ``cache_bytes``): the sample set's 2700 images
        #: take 130 MB and 1.8 s to decode on 2 cores, every epoch otherwise
        self.cache_bytes = cache_bytes
        self._image_cache: dict[tuple, Optional[torch.Tensor]] = {}
        #: epoch -> {"acc", "bacc", "auroc", "majority_acc", "loss"}; saved in checkpoints so a resumed
        #: run's curve still starts at the initial network
        self.history: dict[int, dict[str, float]] = {}
        self._last_epoch: Optional[int] = None

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"history": {int(e): dict(m) for e, m in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {int(e): dict(m) for e, m in state_dict.get("history", {}).items()}

    # ----------------------------------------------------------------------------- scoring
    def _datasets(self, dm: Any) -> Optional[tuple[FaceImageDataset, FaceImageDataset]]:
        if dm is None or not getattr(dm, "attribute_names", None) or dm.eval_transform is None:
            log.warning("KNNProbe: the data module has no attribute labels or eval transform; skipping")
            return None
        if not dm.splits.get("val"):
            return None
        self._num_workers = self.num_workers if self.num_workers is not None else getattr(dm, "num_workers", 0)

        def make(split: str, limit: Optional[int]) -> FaceImageDataset:
            return FaceImageDataset(dm.splits[split][:limit], dm.eval_transform, dm.labels[split][:limit],
                                    dm.attribute_names)

        return make("train", self.max_bank), make("val", None)

    def _batches(self, dataset: FaceImageDataset, device: torch.device, limit: Optional[int] = None,
                 shuffle: bool = False) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(0)  # the same recalibration images in every measurement
        cached = self._cached_images(dataset)
        if cached is not None:
            order = torch.randperm(len(cached), generator=generator) if shuffle else torch.arange(len(cached))
            batches = (cached[order[i:i + self.batch_size]] for i in range(0, len(cached), self.batch_size))
        else:
            loader = DataLoader(dataset, batch_size=self.batch_size, num_workers=self._num_workers, shuffle=shuffle,
                                generator=generator)
            batches = (batch["image"] for batch in loader)
        for i, images in enumerate(batches):
            if limit is not None and i >= limit:
                return
            yield images.to(device)

    def _cached_images(self, dataset: FaceImageDataset) -> Optional[torch.Tensor]:
        """The eval-transformed images of ``dataset``, decoded once and kept for every later measurement when
        they fit in ``cache_bytes`` (the eval transform is deterministic); None: stream them each time."""
        key = (tuple(str(p) for p in dataset.paths), id(dataset.transform))
        if key in self._image_cache:  # None: decided once that this set is streamed
            return self._image_cache[key]
        first = dataset[0]["image"] if len(dataset) else None
        if first is None or first.numel() * first.element_size() * len(dataset) > self.cache_bytes:
            self._image_cache[key] = None
            return None
        loader = DataLoader(dataset, batch_size=self.batch_size, num_workers=self._num_workers)
        self._image_cache[key] = images = torch.cat([batch["image"] for batch in loader])
        return images

    @torch.no_grad()
    def _features(self, pl_module: pl.LightningModule, dataset: FaceImageDataset) -> torch.Tensor:
        return torch.cat([pl_module(x).float().cpu() for x in self._batches(dataset, pl_module.device)])

    @staticmethod
    def _precision(pl_module: pl.LightningModule):
        """The trainer's forward precision (bf16 autocast under bf16-mixed), for the initial network and every
        epoch alike, so the features are measured as training computes them."""
        trainer = getattr(pl_module, "_trainer", None)
        return trainer.precision_plugin.forward_context() if trainer is not None else nullcontext()

    def measure(self, pl_module: pl.LightningModule, bank_set: FaceImageDataset, query_set: FaceImageDataset,
                recalibrate_bn: bool = False) -> dict[str, Any]:
        """Mean and per-attribute scores of ``pl_module``'s features (BN recalibrated on the bank if asked),
        computed under the trainer's precision."""
        batches = self._batches(bank_set, pl_module.device, self.recalibrate_bn_batches, shuffle=True)
        was_training = pl_module.training
        try:
            recalibration = recalibrated_batchnorm(pl_module, batches) if recalibrate_bn else nullcontext()
            with self._precision(pl_module), recalibration:
                pl_module.eval()
                bank, queries = self._features(pl_module, bank_set), self._features(pl_module, query_set)
        finally:
            pl_module.train(was_training)
        bank_labels, query_labels = bank_set.labels, query_set.labels
        per_attribute = attribute_scores(self._probabilities(self.method, bank, bank_labels, queries), query_labels)
        per_attribute["majority_acc"] = majority_accuracy(bank_labels, query_labels)
        mean = {k: float(v.nanmean()) for k, v in per_attribute.items()}
        for name in self.extra_methods:
            extra = attribute_scores(self._probabilities(name, bank, bank_labels, queries), query_labels)
            mean.update({f"{name}_{k}": float(extra[k].nanmean()) for k in SCORES})
        return {"mean": mean, "per_attribute": per_attribute}

    def _probabilities(self, method: str, bank: torch.Tensor, bank_labels: torch.Tensor,
                       queries: torch.Tensor) -> torch.Tensor:
        if method == "knn":
            return knn_attribute_probabilities(bank, bank_labels, queries, self.k, self.temperature)
        return fit_logistic_probe(bank, bank_labels, l2=self.l2).probabilities(queries)

    # ----------------------------------------------------------------------------- hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.baseline or INITIAL_EPOCH in self.history or trainer.current_epoch > 0:
            return
        sets = self._datasets(trainer.datamodule)
        if sets is None:
            return
        started = bool(getattr(pl_module, "hparams", {}).get("start"))  # released weights keep their own statistics
        result = self.measure(pl_module, *sets, recalibrate_bn=not started)
        self.history[INITIAL_EPOCH] = dict(result["mean"])
        metrics = self._metrics(result, trainer.datamodule.attribute_names)
        metrics[f"{self.prefix}/majority_acc"] = result["mean"]["majority_acc"]
        for logger in trainer.loggers:  # epoch -1: a row of its own, before any training step
            logger.log_metrics({**metrics, "epoch": INITIAL_EPOCH}, step=0)
        how = "started from backbone.weights, as loaded" if started else "its BatchNorm, if any, recalibrated on the train split"
        log.info("initial network (%s): %s %s %.3f", how, self.method, self.score, result["mean"][self.score])

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record_loss(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_epoch = trainer.current_epoch
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        sets = self._datasets(trainer.datamodule)
        if sets is None:
            return
        result = self.measure(pl_module, *sets)
        self.history.setdefault(trainer.current_epoch, {}).update(result["mean"])
        metrics = self._metrics(result, trainer.datamodule.attribute_names)
        pl_module.log_dict(metrics, on_step=False, on_epoch=True)

    def _metrics(self, result: dict[str, Any], attribute_names: list[str]) -> dict[str, float]:
        name = f"{self.prefix}/{self.method}"
        metrics = {f"{name}_{k}": result["mean"][k] for k in SCORES}
        metrics.update({f"{self.prefix}/{m}_{k}": result["mean"][f"{m}_{k}"] for m in self.extra_methods for k in SCORES})
        for score in ("acc", "auroc"):
            metrics.update({f"{name}_{score}/{n}": float(a) for n, a in zip(attribute_names, result["per_attribute"][score])})
        return metrics

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record_loss(trainer)
        if not trainer.is_global_zero or not self.history:
            return
        summary = learning_summary(self.history, self.method, self.score, self.extra_methods)
        if summary:
            log.info(summary)
        if self.learning_curve:
            out = next((Path(lg.log_dir) for lg in trainer.loggers if getattr(lg, "log_dir", None)),
                       Path(trainer.default_root_dir))
            paths = write_learning_curve(self.history, out, self.method, self.score, self.extra_methods)
            log.info("learning curve: %s", paths["png"])

    def _record_loss(self, trainer: pl.Trainer) -> None:
        """The previous epoch's mean loss, which Lightning aggregates only after the epoch-end hooks."""
        if self._last_epoch is None:
            return
        loss = trainer.callback_metrics.get(self.loss_key)
        if loss is not None:
            self.history.setdefault(self._last_epoch, {})["loss"] = float(loss)
        self._last_epoch = None
