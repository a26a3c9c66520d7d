"""Train attribute-probe heads on frozen, cached features (the FDD paper's Table 1).

Binary attributes: multi-label BCE (optional ``pos_weight`` = negatives / positives per attribute
for imbalanced labels). Categories (age group, ethnicity): softmax cross-entropy. Validation and
test report torchmetrics accuracy and AUROC per attribute, accuracy per category, and their means.
The default optimiser is AdamW (LR 0.01, no weight decay) with cosine decay to 0 over the epochs.
DINO's ``eval_linear.py`` recipe (SGD, momentum 0.9, LR 0.001 x total batch / 256) is for 100 epochs
over ImageNet with augmentation; on cached features of a few thousand faces it underfits badly
(measured on the sample set: 0.60 vs 0.83 mean accuracy), so it is an option (``scale_lr=True``
with an SGD partial), not the default.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import (
    BinaryAccuracy, BinaryAUROC, MulticlassAccuracy, MultilabelAccuracy, MultilabelAUROC,
)

from facefd.models.checkpoints import DataOnlyCheckpoints
from facefd.models.backbone import factory_spec, partial_from_spec
from facefd.models.probe.heads import ProbeHeads
from facefd.utils.distributed import destroy_process_group_at_exit

_STAGES = ("val", "test", "extra_test")


def _binary_metrics(num_labels: int) -> nn.ModuleDict:
    """Per-attribute accuracy and AUROC (torchmetrics' multilabel metrics need at least 2 labels)."""
    if num_labels == 1:
        return nn.ModuleDict({"acc": BinaryAccuracy(ignore_index=-1), "auroc": BinaryAUROC(ignore_index=-1)})
    return nn.ModuleDict({
        "acc": MultilabelAccuracy(num_labels=num_labels, average=None, ignore_index=-1),
        "auroc": MultilabelAUROC(num_labels=num_labels, average=None, ignore_index=-1),
    })


class ProbeModule(DataOnlyCheckpoints, pl.LightningModule):
    """Attribute heads (linear or MLP) trained on frozen features (``python train.py model=probe``).

    It trains inside a Lightning ``Trainer`` with a
    :class:`~facefd.models.probe.feature_data.ProbeFeatureDataModule`, which supplies the features,
    the attribute names and the categorical columns.

    Args:
        head: ``linear`` or ``mlp``.
        hidden_dim: width of the MLP's hidden layers.
        depth: hidden layers of the MLP.
        dropout: dropout before each layer of the MLP.
        standardize: standardise features with the train split's mean and std (kept in the head).
        pos_weight: weight positives by negatives/positives per attribute.
        optimizer: a torch optimizer partial or its ``{"target", "kwargs"}`` spec (AdamW, LR 0.01 by default).
        scale_lr: multiply the LR by total batch / 256.
        extra_test_name: the name of the independent test set's columns.

    Example:
        >>> from facefd.models.probe import ProbeModule
        >>> probe = ProbeModule(head="mlp", hidden_dim=32)
        >>> probe.hparams.head, probe.hparams.optimizer["target"]
        ('mlp', 'torch.optim.adamw.AdamW')
    """

    def __init__(self, head: str = "linear", hidden_dim: int = 512, depth: int = 1, dropout: float = 0.0,
                 standardize: bool = True, pos_weight: bool = False,
                 optimizer: Callable[..., torch.optim.Optimizer] | dict[str, Any] | None = None,
                 scale_lr: bool = False, extra_test_name: str = "independent") -> None:
        super().__init__()
        optimizer = optimizer or {"target": "torch.optim.AdamW", "kwargs": {"lr": 0.01, "weight_decay": 0.0}}
        self.save_hyperparameters(logger=False, ignore=["optimizer"])
        # a spec from a checkpoint must be on the allow-list unless the caller is inside trusting_code()
        self._optimizer_factory = partial_from_spec(optimizer, source="the checkpoint's optimizer")
        self.hparams.optimizer = factory_spec(self._optimizer_factory)  # plain: weights_only-safe ckpts
        self.heads: Optional[ProbeHeads] = None
        self.extractor_fingerprint = ""

    # ------------------------------------------------------------------ built from the data
    def setup(self, stage: str) -> None:
        destroy_process_group_at_exit()
        if self.heads is not None:
            return
        dm = self.trainer.datamodule
        if dm is None or not hasattr(dm, "features"):
            raise TypeError("ProbeModule trains on frozen features: use it with a ProbeFeatureDataModule "
                            "(python train.py model=probe ...)")
        hp = self.hparams
        self.heads = ProbeHeads(dm.num_features, dm.attribute_names, dm.categories, hp.head, hp.hidden_dim,
                                hp.depth, hp.dropout, hp.standardize)
        train_feats = dm.features["train"]
        self.heads.set_feature_statistics(train_feats)
        self.extractor_fingerprint = dm.extractor_fingerprint
        num_attrs = len(dm.attribute_names)
        weight = torch.ones(num_attrs)
        if hp.pos_weight and num_attrs:
            labels = dm.labels["train"].float()
            pos = labels.nansum(0)
            neg = (1 - labels).nansum(0)
            weight = torch.where(pos > 0, neg / pos.clamp_min(1), torch.ones_like(pos))
        self.register_buffer("pos_weight", weight)
        # the extra test folder may label only some attributes: its metrics cover those columns
        self.stage_columns = {s: list(range(num_attrs)) for s in _STAGES}
        extra = getattr(dm, "datasets", {}).get("extra_test")
        if extra is not None:
            self.stage_columns["extra_test"] = [i for i in range(num_attrs) if not extra.attributes[:, i].isnan().all()]
        self.metrics = nn.ModuleDict()
        for stage_name in _STAGES:
            group = nn.ModuleDict()
            if self.stage_columns[stage_name]:
                group["binary"] = _binary_metrics(len(self.stage_columns[stage_name]))
            for name, classes in dm.categories.items():
                group[f"cat_{name}"] = MulticlassAccuracy(num_classes=len(classes), average="micro", ignore_index=-1)
            self.metrics[stage_name] = group

    # ------------------------------------------------------------------ steps
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.heads(features)

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        binary, blocks = self.heads.split(self(batch["features"]))
        loss = binary.new_zeros(())
        if binary.shape[1]:
            target = batch["attributes"].float()
            known = ~target.isnan()
            per = F.binary_cross_entropy_with_logits(binary, target.nan_to_num(0.0), reduction="none",
                                                     pos_weight=self.pos_weight)
            loss = loss + (per * known).sum() / known.sum().clamp_min(1)
        for j, logits in enumerate(blocks.values()):
            loss = loss + F.cross_entropy(logits, batch["categories"][:, j], ignore_index=-1)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["features"]))
        return loss

    def _update(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        binary, blocks = self.heads.split(self(batch["features"]))
        group = self.metrics[stage]
        if "binary" in group:
            columns = self.stage_columns[stage]
            binary = binary[:, columns]
            target = batch["attributes"][:, columns].nan_to_num(-1).long()
            # Quantised to 1e-6: the vectorised and scalar paths of sigmoid differ by an ulp, which would
            # turn exact ties (e.g. an attribute the features cannot see) into an arbitrary ranking.
            probs = (binary.float().sigmoid() * 1e6).round() / 1e6
            single = probs.shape[1] == 1
            for metric in group["binary"].values():
                metric.update(probs[:, 0] if single else probs, target[:, 0] if single else target)
        for j, (name, logits) in enumerate(blocks.items()):
            if batch["categories"].shape[1]:  # the extra test set has no categories
                group[f"cat_{name}"].update(logits.float(), batch["categories"][:, j])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._update("val", batch)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update("extra_test" if dataloader_idx == 1 else "test", batch)

    def _log_stage(self, stage: str) -> None:
        prefix = f"test_{self.hparams.extra_test_name}" if stage == "extra_test" else stage
        names = self.heads.attribute_names
        group = self.metrics[stage]
        values: dict[str, float] = {}
        accs: list[float] = []
        if "binary" in group and group["binary"]["acc"]._update_count:
            acc, auroc = group["binary"]["acc"].compute().reshape(-1), group["binary"]["auroc"].compute().reshape(-1)
            for j, i in enumerate(self.stage_columns[stage]):
                values[f"{prefix}/acc/{names[i]}"] = float(acc[j])
                values[f"{prefix}/auroc/{names[i]}"] = float(auroc[j])
                accs.append(float(acc[j]))
            values[f"{prefix}/auroc"] = float(auroc.mean())
        for name in self.heads.categories:
            metric = group[f"cat_{name}"]
            if metric._update_count:
                values[f"{prefix}/acc/{name}"] = float(metric.compute())
                accs.append(values[f"{prefix}/acc/{name}"])
        if accs:
            values[f"{prefix}/acc"] = sum(accs) / len(accs)
        for metric in group.modules():
            if hasattr(metric, "reset") and metric is not group:
                metric.reset()
        if values:
            self.log_dict(values, sync_dist=False)  # torchmetrics already synced the states

    def on_validation_epoch_end(self) -> None:
        self._log_stage("val")

    def on_test_epoch_end(self) -> None:
        self._log_stage("test")
        self._log_stage("extra_test")

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self._optimizer_factory(self.heads.parameters())
        if self.hparams.scale_lr:  # eval_linear: lr * batch_size_per_gpu * world_size / 256
            batch = self.trainer.datamodule.batch_size * self.trainer.world_size
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * batch / 256.0
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=0.0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ------------------------------------------------------------------ files
    def card(self) -> dict[str, Any]:
        return self.heads.card(extractor_fingerprint=self.extractor_fingerprint)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["probe_card"] = self.card()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        card = checkpoint.get("probe_card")
        if card and self.heads is None:  # loaded outside a Trainer: rebuild the heads from the card
            self.heads = ProbeHeads.from_card(card)
            self.extractor_fingerprint = card.get("extractor_fingerprint", "")
            self.register_buffer("pos_weight", torch.ones(len(card["attribute_names"])))

    def export_heads(self, path: str | Path) -> Path:
        from facefd.models.probe.predictor import save_heads

        return save_heads(self.heads, path, self.card())
