"""Online attribute probe (k-NN or linear): shows during self-supervised training whether the features improve."""
from __future__ import annotations

import logging
from typing import Optional

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from facefd.data.dataset import FaceImageDataset
from facefd.models.probe.knn import knn_attribute_accuracy
from facefd.models.probe.logistic import fit_logistic_probe

log = logging.getLogger(__name__)


class KNNProbe(pl.Callback):
    """Every ``every_n_epochs`` epochs: features of the train split (bank) and the val split (queries)
    through ``pl_module(images)`` on the data module's eval transform, then per attribute either the
    k-NN vote (``method="knn"``, DINO's eval_knn) or a logistic-regression linear probe fitted on the
    bank (``method="linear"``). Logs ``{prefix}/{method}_acc`` (mean over attributes) and
    ``{prefix}/{method}_acc/<attribute>``.

    Needs a data module with attribute labels (``FaceImageDataModule`` with a CelebA-style file; the
    sample set has them). Every DDP rank computes the same value (the work is not split).
    """

    def __init__(self, every_n_epochs: int = 1, k: int = 20, temperature: float = 0.07, batch_size: int = 256,
                 max_bank: Optional[int] = None, prefix: str = "val", method: str = "knn", l2: float = 1e-3) -> None:
        if method not in ("knn", "linear"):
            raise ValueError(f"method must be 'knn' or 'linear', got {method!r}")
        self.method, self.l2 = method, l2
        self.every_n_epochs, self.k, self.temperature = every_n_epochs, k, temperature
        self.batch_size, self.max_bank, self.prefix = batch_size, max_bank, prefix

    @torch.no_grad()
    def _features(self, pl_module: pl.LightningModule, dataset: FaceImageDataset) -> torch.Tensor:
        feats = []
        for batch in DataLoader(dataset, batch_size=self.batch_size, num_workers=0):
            feats.append(pl_module(batch["image"].to(pl_module.device)).float().cpu())
        return torch.cat(feats)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        dm = trainer.datamodule
        if dm is None or not getattr(dm, "attribute_names", None) or dm.eval_transform is None:
            log.warning("KNNProbe: the data module has no attribute labels or eval transform; skipping")
            return
        train_paths, val_paths = dm.splits["train"][: self.max_bank], dm.splits["val"]
        if not val_paths:
            return
        make = lambda paths, labels: FaceImageDataset(paths, dm.eval_transform, labels, dm.attribute_names)  # noqa: E731
        bank_labels, val_labels = dm.labels["train"][: self.max_bank], dm.labels["val"]
        was_training = pl_module.training
        pl_module.eval()
        try:
            bank = self._features(pl_module, make(train_paths, bank_labels))
            queries = self._features(pl_module, make(val_paths, val_labels))
        finally:
            pl_module.train(was_training)
        if self.method == "knn":
            acc = knn_attribute_accuracy(bank, bank_labels, queries, val_labels, self.k, self.temperature)
        else:
            probe = fit_logistic_probe(bank, bank_labels, l2=self.l2)
            acc = ((probe.probabilities(queries) > 0.5).float() == val_labels.float()).float().mean(0)
        name = f"{self.prefix}/{self.method}_acc"
        metrics = {name: float(acc.mean())}
        metrics.update({f"{name}/{n}": float(a) for n, a in zip(dm.attribute_names, acc)})
        pl_module.log_dict(metrics, on_step=False, on_epoch=True)
