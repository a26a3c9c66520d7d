"""DINO student-teacher training as a ``LightningModule``, following the reference ``main_dino.py``.

Every optimiser-side detail of the reference is kept: per-iteration LR / weight-decay / teacher
momentum schedules, no decay on biases and norms, per-parameter gradient clipping, the last layer
frozen during the first epoch(s), and the EMA teacher update after each optimizer step.
Lightning still owns devices, precision, accumulation, DDP and checkpointing.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Optional, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from facefd.models.backbone import plain
from facefd.models.backbone import BackboneFactory, factory_spec, feature_width, partial_from_spec
from facefd.models.checkpoints import DataOnlyCheckpoints
from facefd.models.dino.head import DINOHead
from facefd.models.dino.koleo import koleo_loss
from facefd.models.dino.collapse import CollapseThresholds, diagnose
from facefd.models.dino.collapse import message as collapse_message
from facefd.models.dino.loss import DINOLoss, teacher_temperature_schedule
from facefd.models.dino.schedules import cosine_schedule
from facefd.models.optim import clip_gradients_per_parameter, regularization_groups
from facefd.models.pretrained import (RESTORE_CHOICES, StartWeights, StartWeightsError, apply_start, read_start,
                                      split_start_options)
from facefd.utils.distributed import destroy_process_group_at_exit

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised when the DINO loss becomes NaN/inf (typically fp16 overflow)."""


class DINOModule(DataOnlyCheckpoints, pl.LightningModule):
    """Self-distillation with no labels.

    Args:
        backbone: factory returning a fresh backbone mapping images to ``[N, D]`` features
            (``timm.create_model`` partial with ``num_classes=0`` in the configs), or its spec dict.
        optimizer: partial of a torch optimizer (or its spec dict); its ``lr`` is the base LR for a
            total batch of 256 and its ``weight_decay`` the start of the weight-decay schedule.
            Both are stored in the checkpoint as plain ``{"target", "kwargs"}`` specs, so checkpoints
            load with ``torch.load(weights_only=True)``.
        head: keyword arguments of :class:`DINOHead` (``out_dim``, ``use_bn``, ...).
        local_crops_number: local crops per image (the student sees ``2 + local_crops_number``).
        batch_size: per-device batch size, used for the linear LR scaling rule.
        student_drop_path_rate: stochastic depth of the student only (reference: 0.1 for ViTs).
        input_size: global crop size, recorded as the exported extractor's input size.
        centering: how the teacher's targets are kept from collapsing: ``"ema"`` (DINO: subtract an EMA of
            the teacher's mean output) or ``"sinkhorn"`` (SwAV / DINOv2: Sinkhorn-Knopp, each prototype gets
            an equal share of the batch; ``sinkhorn_iterations`` rounds).
        koleo_weight: weight of the KoLeo regulariser (:mod:`facefd.models.dino.koleo`, DINOv2's) on the
            student backbone's features of each global crop; 0 (the default) is plain DINO.
        nonfinite_check_every_n_steps: how often the NaN/inf flag is read on the host (and always at
            the last batch of an epoch, before checkpoints). The reference reads ``loss.item()``
            every step, which stalls the GPU queue; the flag is accumulated on the device instead.

        freeze_backbone_epochs: epochs in which the student backbone's weights do not move (its BatchNorm
            statistics still adapt): a run started from released weights trains its new head on them first,
            instead of letting a random head's gradients rewrite the backbone.
        start: the record of the weights the run started from (set by the module itself when ``backbone``
            carries start keys: ``weights``, ``weights_revision``, ``weights_key``, ``restore``; see
            :mod:`facefd.models.pretrained`). Data only: a resumed or loaded checkpoint never re-reads it.

    A checkpoint's stored backbone/optimizer specs must be on the allow-list (timm models, torch
    optimizers, facefd builders); to load one that names other code, the caller opts in with
    ``with facefd.trusting_code(): DINOModule.load_from_checkpoint(path)`` -- never the checkpoint itself.

    Example:
        >>> from functools import partial
        >>> import timm, torch
        >>> from facefd.models.dino import DINOModule
        >>> module = DINOModule(backbone=partial(timm.create_model, model_name="test_resnet", num_classes=0),
        ...                     optimizer=partial(torch.optim.AdamW, lr=5e-4),
        ...                     head=dict(out_dim=64, hidden_dim=32, bottleneck_dim=16), local_crops_number=2)
        >>> module(torch.rand(2, 3, 32, 32)).shape  # the teacher backbone's features
        torch.Size([2, 96])
    """

    def __init__(
        self,
        backbone: BackboneFactory | dict[str, Any],
        optimizer: Callable[..., torch.optim.Optimizer] | dict[str, Any],
        head: Optional[dict[str, Any]] = None,
        local_crops_number: int = 8,
        batch_size: int = 64,
        min_lr: float = 1e-6,
        warmup_epochs: int = 10,
        weight_decay_end: float = 0.4,
        momentum_teacher: float = 0.996,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        clip_grad: float = 3.0,
        freeze_last_layer: int = 1,
        freeze_backbone_epochs: int = 0,
        student_drop_path_rate: float = 0.0,
        collapse_tolerance: float = 0.01,
        collapse_patience_epochs: int = 3,
        collapse_dominant_entropy: float = 0.1,
        collapse_dominant_kl: float = 0.01,
        input_size: int = 224,
        nonfinite_check_every_n_steps: int = 10,
        koleo_weight: float = 0.0,
        centering: str = "ema",
        sinkhorn_iterations: int = 3,
        start: Optional[dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["backbone", "optimizer", "head", "start"])
        start_options: dict[str, Any] = {}
        if callable(backbone):  # the runner's own config: backbone.weights=... starts from released weights
            backbone = partial_from_spec(backbone)
            keywords, start_options = split_start_options(dict(backbone.keywords))
            backbone = functools.partial(backbone.func, *backbone.args, **keywords)
        backbone = partial_from_spec(backbone, source="the checkpoint's backbone")
        optimizer = partial_from_spec(optimizer, source="the checkpoint's optimizer")
        self.hparams.backbone = factory_spec(backbone)
        self.hparams.optimizer = factory_spec(optimizer)
        self._optimizer_factory = optimizer  # already checked: the spec is not re-resolved later
        self.hparams.head = head_kwargs = plain(dict(head or {}))
        student_backbone = backbone(drop_path_rate=student_drop_path_rate) if student_drop_path_rate else backbone()
        self.embed_dim = feature_width(student_backbone)
        self.student = nn.ModuleDict(
            {"backbone": student_backbone, "head": DINOHead(self.embed_dim, **head_kwargs)}
        )
        loaded = self._load_start(start_options) if start_options else None
        #: where the weights started (source, sha256, layout...): data only, never re-read on resume
        self.hparams.start = loaded.record if loaded is not None else (dict(start) if start else None)
        # A separately built teacher, loaded from the student: never a reference or deep copy of it.
        self.teacher = nn.ModuleDict({"backbone": backbone(), "head": DINOHead(self.embed_dim, **head_kwargs)})
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.out_dim = self.student["head"].last_layer.out_features
        self.criterion = DINOLoss(
            out_dim=self.out_dim,
            ncrops=2 + local_crops_number,
            warmup_teacher_temp=warmup_teacher_temp,
            teacher_temp=teacher_temp,
            warmup_teacher_temp_epochs=warmup_teacher_temp_epochs,
            nepochs=max(warmup_teacher_temp_epochs, 1),  # re-made for trainer.max_epochs at fit start
            student_temp=student_temp,
            center_momentum=center_momentum,
            defer_center_update=True,
            centering=centering,
            sinkhorn_iterations=sinkhorn_iterations,
        )
        if loaded is not None and loaded.center is not None and loaded.record.get("restored") == "all":
            self.criterion.center.copy_(loaded.center.reshape(self.criterion.center.shape))
        self.lr_schedule = self.wd_schedule = self.momentum_schedule = np.zeros(0)
        self._nonfinite_steps: torch.Tensor | int = 0
        self._collapsed_epochs = 0
        self._collapse_kind: str | None = None
        self._diagnostics_sum: torch.Tensor | float = 0.0  # per-sample entropy, batch-mean entropy, KL
        self._diagnostics_count = 0
        #: the collapse warning of the last epoch that warned (the run's closing line repeats it), else None
        self.collapse_warning: str | None = None
        self._base_seed = 0
        self._last_schedule_values: dict[str, float] = {}

    # ----------------------------------------------------------------------------- forward
    @staticmethod
    def multicrop_forward(model: nn.ModuleDict, crops: Sequence[torch.Tensor], return_features: bool = False):
        """Run the backbone once per run of same-resolution crops, then the head on all of them
        (with ``return_features``: also the backbone features, as ``(head_output, features)``)."""
        sizes = torch.tensor([c.shape[-1] for c in crops])
        ends = torch.cumsum(torch.unique_consecutive(sizes, return_counts=True)[1], 0).tolist()
        start, feats = 0, []
        for end in ends:
            feats.append(model["backbone"](torch.cat(list(crops[start:end]))))
            start = end
        features = torch.cat(feats)
        output = model["head"](features)
        return (output, features) if return_features else output

    def _load_start(self, options: dict[str, Any]) -> StartWeights:
        """Load ``backbone.weights`` into the student (the teacher is loaded from it next); with
        ``backbone.restore=all`` also the DINO head and centre of a training checkpoint."""
        restore = options.get("restore", "backbone")
        if restore not in RESTORE_CHOICES:
            raise StartWeightsError(f"backbone.restore={restore!r}: choose {' or '.join(RESTORE_CHOICES)}")
        start = read_start(options["weights"], options.get("weights_revision"), options.get("weights_key", "teacher"))
        record = apply_start(self.student["backbone"], start)
        if restore == "all":
            if start.head is None or start.center is None:
                raise StartWeightsError(f"{record['source']}: backbone.restore=all needs a training checkpoint with a "
                                        "DINO head and centre (main_dino.py or facefd); this file has a backbone only")
            head = {k.replace("parametrizations.weight.original0", "weight_g")
                     .replace("parametrizations.weight.original1", "weight_v"): v for k, v in start.head.items()}
            try:
                self.student["head"].load_state_dict(head, strict=True)
            except RuntimeError as exc:
                raise StartWeightsError(f"{record['source']}: its DINO head does not fit model.head "
                                        f"({str(exc).splitlines()[0][:300]})") from None
        record["restored"] = restore
        start.record = record
        return start

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Teacher backbone features (the exported extractor)."""
        return self.teacher["backbone"](images)

    def export_extractor(self, path, source: Optional[dict[str, Any]] = None):
        """Write the teacher backbone as a self-describing extractor (see :mod:`facefd.models.extractor`)."""
        from facefd.data.transforms import IMAGENET_MEAN, IMAGENET_STD
        from facefd.models.extractor import save_extractor

        if self.hparams.get("start"):
            source = {**(source or {}), "start": self.hparams.start}
        return save_extractor(self.teacher["backbone"], self.hparams.backbone, path, self.embed_dim,
                              self.hparams.input_size, IMAGENET_MEAN, IMAGENET_STD, source=source)

    # ----------------------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        destroy_process_group_at_exit()
        hp = self.hparams
        self.criterion.teacher_temp_schedule = teacher_temperature_schedule(
            hp.warmup_teacher_temp, hp.teacher_temp, hp.warmup_teacher_temp_epochs, self._max_epochs()
        )
        self._base_seed = torch.initial_seed()

    def on_train_epoch_start(self) -> None:
        # Reseed per epoch so stochastic layers (drop path) replay identically after a resume.
        torch.manual_seed((self._base_seed * 1_000_003 + self.current_epoch) % (2**63))
        self._diagnostics_sum, self._diagnostics_count = 0.0, 0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if "crops" not in batch and "aug" in batch:
            raise ValueError(
                "the batch holds planned crops that were never rendered: MultiCropAugmentation(device=...) is "
                "rendered by FaceImageDataModule's batch-transfer hooks; with another data module, set "
                "batch['crops'] = transform.batched.render(batch) in its on_after_batch_transfer"
            )
        crops = batch["crops"]
        if len(crops) != self.criterion.ncrops:
            raise ValueError(
                f"got {len(crops)} crops per image but the model expects {self.criterion.ncrops} "
                "(2 global + model.local_crops_number); make data.train_transform.local_crops_number match"
            )
        teacher_output = self.multicrop_forward(self.teacher, crops[:2])  # only the 2 global views
        student_output, student_features = self.multicrop_forward(self.student, crops, return_features=True)
        loss = self.criterion(student_output, teacher_output, self.current_epoch)
        self._nonfinite_steps = self._nonfinite_steps + (~torch.isfinite(loss.detach())).int()
        # train/loss stays the DINO loss (comparable with ln K and the collapse check); KoLeo is logged apart
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=crops[0].shape[0],
                 sync_dist=True)
        self._track_collapse(loss.detach(), crops[0].shape[0])
        if self.hparams.koleo_weight:
            # per global crop, as DINOv2 (per device under DDP: a neighbour must be in the same batch)
            koleo = sum(koleo_loss(f) for f in student_features[: 2 * crops[0].shape[0]].chunk(2))
            self.log("train/koleo", koleo, on_step=False, on_epoch=True, batch_size=crops[0].shape[0],
                     sync_dist=True)
            loss = loss + self.hparams.koleo_weight * koleo
        return loss

    def _raise_if_nonfinite(self) -> None:
        if int(self._nonfinite_steps) > 0:  # one host read every few steps, not every step
            raise NonFiniteLossError(
                f"DINO loss became NaN/inf (epoch {self.current_epoch}, by step {self.global_step}). "
                "With precision=16-mixed this is usually fp16 overflow: use precision=bf16-mixed or 32-true, "
                "or lower model.optimizer.lr. With bf16-mixed on the CPU (precision=auto-bf16 picks it on CPUs with "
                "native bf16), crops so small that a strided convolution sees 1x1 maps (16 px for ResNets) can "
                "get non-finite gradients from oneDNN: use precision=32-true or larger crops."
            )

    def _track_collapse(self, loss: torch.Tensor, batch_size: int) -> None:
        """Log the teacher's per-sample and batch-mean target entropies and KL(teacher || student) = loss - H."""
        if self.criterion.last_entropies is None:
            return
        per_sample, batch = self.criterion.last_entropies
        values = torch.stack([per_sample, batch, loss.float() - per_sample])
        for name, value in zip(("teacher_entropy", "teacher_batch_entropy", "kl"), values):
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)
        self._diagnostics_sum = self._diagnostics_sum + values
        self._diagnostics_count += 1

    def on_train_epoch_end(self) -> None:
        self._raise_if_nonfinite()
        if self._diagnostics_count == 0:
            return
        per_sample, batch, kl = (float(v) for v in (self._diagnostics_sum / self._diagnostics_count).tolist())
        thresholds = CollapseThresholds(uniform_fraction=1 - self.hparams.collapse_tolerance,
                                        dominant_entropy=self.hparams.collapse_dominant_entropy,
                                        dominant_kl=self.hparams.collapse_dominant_kl,
                                        patience_epochs=self.hparams.collapse_patience_epochs)
        kind = diagnose(per_sample, batch, kl, self.out_dim, thresholds)
        self._collapsed_epochs = self._collapsed_epochs + 1 if kind is not None and kind == self._collapse_kind else \
            (1 if kind is not None else 0)
        self._collapse_kind = kind
        if kind is not None and self._collapsed_epochs >= thresholds.patience_epochs:
            self.collapse_warning = collapse_message(kind, per_sample, batch, kl, self.out_dim, self._collapsed_epochs,
                                                     thresholds)
            log.warning(self.collapse_warning)

    # ----------------------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = self._optimizer_factory(regularization_groups([self.student]))
        self._base_lr = optimizer.defaults["lr"]
        self._base_wd = optimizer.defaults.get("weight_decay", 0.0)
        return optimizer

    def on_train_start(self) -> None:
        # Built here, not in configure_optimizers: the step count needs the train loader, and asking for it
        # before a checkpoint is restored would make the loader's iterator (and, with workers, its first
        # prefetched indices) for epoch 0 instead of the epoch the run resumes at.
        self._build_schedules()

    def _build_schedules(self) -> None:
        hp = self.hparams
        world = self.trainer.world_size * self.trainer.accumulate_grad_batches
        lr = self._base_lr * hp.batch_size * world / 256.0  # linear scaling rule
        epochs = self._max_epochs()
        niter = max(int(self.trainer.estimated_stepping_batches) // epochs, 1)
        self.lr_schedule = cosine_schedule(lr, hp.min_lr, epochs, niter, warmup_epochs=hp.warmup_epochs)
        self.wd_schedule = cosine_schedule(self._base_wd, hp.weight_decay_end, epochs, niter)
        self.momentum_schedule = cosine_schedule(hp.momentum_teacher, 1.0, epochs, niter)

    def _max_epochs(self) -> int:
        epochs = self.trainer.max_epochs
        if epochs is None or epochs < 0:
            raise ValueError("DINO schedules are per epoch: set trainer.max_epochs (>0)")
        return int(epochs)

    def _schedule_value(self, schedule: np.ndarray, it: int) -> float:
        return float(schedule[min(it, len(schedule) - 1)])

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        it = self.global_step
        lr, wd = self._schedule_value(self.lr_schedule, it), self._schedule_value(self.wd_schedule, it)
        for i, group in enumerate(optimizer.param_groups):
            group["lr"] = lr
            if i == 0:  # only the regularised group follows the weight-decay schedule
                group["weight_decay"] = wd
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        momentum = self._schedule_value(self.momentum_schedule, it)
        self.update_teacher(momentum)
        self.criterion.apply_center_update()
        self._last_schedule_values = {
            "train/lr": lr, "train/wd": wd, "train/momentum": momentum,
            "train/teacher_temp": self.criterion.teacher_temp(self.current_epoch),
        }

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # Only on logging steps: each logged float becomes a small host-to-device copy.
        if self._last_schedule_values and self.global_step % max(self.trainer.log_every_n_steps, 1) == 0:
            self.log_dict(self._last_schedule_values, on_step=True, on_epoch=False)
        last_batch = batch_idx + 1 >= self.trainer.num_training_batches  # before epoch-end checkpoints
        if last_batch or self.global_step % max(self.hparams.nonfinite_check_every_n_steps, 1) == 0:
            self._raise_if_nonfinite()

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if gradient_clip_val:
            raise ValueError(
                "trainer.gradient_clip_val clips the global norm; DINO clips each parameter separately. "
                "Set model.clip_grad instead and leave trainer.gradient_clip_val unset."
            )
        if self.hparams.clip_grad:
            clip_gradients_per_parameter(self.student.parameters(), self.hparams.clip_grad)
        if self.current_epoch < self.hparams.freeze_last_layer:
            for p in self.student["head"].last_layer.parameters():
                p.grad = None
        if self.current_epoch < self.hparams.get("freeze_backbone_epochs", 0):  # a warm start's head learns first
            for p in self.student["backbone"].parameters():
                p.grad = None

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher = m * teacher + (1 - m) * student, over parameters (buffers are the teacher's own)."""
        teacher_params = list(self.teacher.parameters())
        student_params = [p.detach() for p in self.student.parameters()]
        torch._foreach_mul_(teacher_params, momentum)
        torch._foreach_add_(teacher_params, student_params, alpha=1.0 - momentum)
