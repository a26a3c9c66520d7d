"""DINOModule inside a real Lightning Trainer: teacher isolation, EMA, frozen last layer,
center updates per optimizer step, NaN guard."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from facefd.models.dino.module import NonFiniteLossError
from runs import crops_loader, tiny_module






def fit(module, n_batches, loader=None, **trainer_kw):
    options = dict(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False)
    trainer = pl.Trainer(**{**options, **trainer_kw})
    trainer.fit(module, loader if loader is not None else crops_loader(n_batches))
    return trainer


def test_teacher_is_a_separate_module_without_gradients():
    m = tiny_module()
    student_ptrs = {p.data_ptr() for p in m.student.parameters()}
    assert not student_ptrs & {p.data_ptr() for p in m.teacher.parameters()}
    for s, t in zip(m.student.state_dict().values(), m.teacher.state_dict().values()):
        assert torch.equal(s, t)  # same start
    fit(m, 2)
    assert all(p.grad is None and not p.requires_grad for p in m.teacher.parameters())
    assert any(p.grad is not None for p in m.student.parameters())


def test_ema_update_after_optimizer_step_matches_formula():
    m = tiny_module(freeze_last_layer=0)
    teacher0 = [p.detach().clone() for p in m.teacher.parameters()]
    trainer = fit(m, 1)
    assert trainer.global_step == 1
    mom = m.momentum_schedule[0]
    assert mom == pytest.approx(0.996)
    changed = 0
    for t0, t, s in zip(teacher0, m.teacher.parameters(), m.student.parameters()):
        torch.testing.assert_close(t.detach(), mom * t0 + (1 - mom) * s.detach(), rtol=1e-5, atol=1e-7)
        changed += int(not torch.equal(t.detach(), t0))
    assert changed > 0


@pytest.mark.parametrize("freeze, expect_frozen", [(1, True), (0, False)])
def test_last_layer_frozen_during_first_epoch(freeze, expect_frozen):
    m = tiny_module(freeze_last_layer=freeze)
    v0 = m.student["head"].last_layer.weight_v.detach().clone()
    mlp0 = m.student["head"].mlp[0].weight.detach().clone()
    fit(m, 2)
    assert torch.equal(m.student["head"].last_layer.weight_v.detach(), v0) == expect_frozen
    assert not torch.equal(m.student["head"].mlp[0].weight.detach(), mlp0)  # the rest trains


def test_backbone_frozen_for_the_first_epochs_of_a_warm_start():
    """freeze_backbone_epochs=1: after an epoch the student backbone's weights are the start's, the head moved;
    the next epoch moves the backbone."""
    m = tiny_module(freeze_last_layer=0, freeze_backbone_epochs=1)
    weights = lambda: [p.detach().clone() for p in m.student["backbone"].parameters()]  # noqa: E731
    start, head0 = weights(), m.student["head"].mlp[0].weight.detach().clone()
    fit(m, 2)
    assert all(torch.equal(a, b) for a, b in zip(weights(), start))
    assert not torch.equal(m.student["head"].mlp[0].weight.detach(), head0)
    fit(m, 2, max_epochs=2)
    assert not all(torch.equal(a, b) for a, b in zip(weights(), start))


def test_center_updates_once_per_optimizer_step_under_accumulation():
    m = tiny_module()
    pending_at_apply = []
    original = m.criterion.apply_center_update

    def counting():
        pending_at_apply.append(m.criterion._pending_count)
        original()

    m.criterion.apply_center_update = counting
    trainer = fit(m, 4, accumulate_grad_batches=2)
    assert trainer.global_step == 2
    # 2 optimizer steps, each applying the teacher outputs of 2 micro-batches x 2 global crops x 4 images
    assert pending_at_apply == [16, 16]


def test_lr_is_scaled_by_total_batch():
    m = tiny_module(min_lr=0.0)
    fit(m, 2, accumulate_grad_batches=2)
    assert m.lr_schedule[0] == pytest.approx(5e-3 * 4 * 2 / 256)


def test_nan_loss_stops_with_clear_message():
    m = tiny_module()
    with torch.no_grad():
        next(m.student["backbone"].parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="bf16-mixed"):
        fit(m, 2)


def test_global_norm_clipping_is_refused():
    m = tiny_module()
    with pytest.raises(ValueError, match=r"^trainer\.gradient_clip_val clips the global norm; DINO clips each "
                                         r"parameter separately\. Set model\.clip_grad instead and leave "
                                         r"trainer\.gradient_clip_val unset\.$"):
        fit(m, 1, gradient_clip_val=1.0)


def reference_cosine(base, final, epochs, niter, warmup_epochs=0, start=0.0):
    """DINO's utils.cosine_scheduler as its paper's code writes it: linear warm-up, then a half cosine."""
    import numpy as np

    warm = np.linspace(start, base, warmup_epochs * niter)
    iters = np.arange(epochs * niter - warmup_epochs * niter)
    return np.concatenate((warm, final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))))


class StepRecorder(pl.Callback):
    """At each optimizer step: gradient norms before clipping, and after the update the groups' LR and weight
    decay, each parameter's group, and the clipped gradients the step used."""

    def __init__(self):
        self.raw, self.steps = [], []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.raw.append({n: float(p.grad.norm()) for n, p in pl_module.student.named_parameters() if p.grad is not None})

    def on_train_start(self, trainer, pl_module):
        optimizer = trainer.optimizers[0]
        names = {id(p): n for n, p in pl_module.student.named_parameters()}

        def after_step(opt, args, kwargs):
            self.steps.append({
                "groups": [(g["lr"], g["weight_decay"], [names[id(p)] for p in g["params"]]) for g in opt.param_groups],
                "clipped": {names[id(p)]: float(p.grad.norm()) for g in opt.param_groups for p in g["params"]
                            if p.grad is not None}})

        optimizer.register_step_post_hook(after_step)


def test_every_step_uses_the_scheduled_lr_and_decay_spares_biases_and_norms_and_clips_each_parameter():
    """Six optimizer steps (2 epochs x 3 batches, 1 warm-up epoch): each step's LR and weight decay equal DINO's
    cosine schedules computed here, biases and norm parameters are never decayed, and every parameter's
    gradient is clipped to 0.05 on its own (the global norm would leave some above it)."""
    m = tiny_module(min_lr=1e-5, warmup_epochs=1, weight_decay_end=0.4, clip_grad=0.05, freeze_last_layer=0)
    recorder = StepRecorder()
    fit(m, 3, max_epochs=2, callbacks=[recorder])
    base = 5e-3 * 4 / 256
    lrs = reference_cosine(base, 1e-5, 2, 3, warmup_epochs=1)
    wds = reference_cosine(0.04, 0.4, 2, 3)
    assert len(recorder.steps) == 6
    for step, lr, wd, raw in zip(recorder.steps, lrs, wds, recorder.raw):
        decayed, plain = step["groups"]
        assert decayed[0] == pytest.approx(lr, rel=1e-9) and plain[0] == pytest.approx(lr, rel=1e-9)
        assert decayed[1] == pytest.approx(wd, rel=1e-9) and plain[1] == 0.0
        assert all(dict(m.student.named_parameters())[n].ndim > 1 for n in decayed[2])
        assert all(dict(m.student.named_parameters())[n].ndim <= 1 for n in plain[2])
        assert all(norm <= 0.05 * (1 + 1e-4) for norm in step["clipped"].values())
        for name, norm in raw.items():  # unclipped where already small, scaled to 0.05 where not
            want = norm if norm <= 0.05 else 0.05
            assert step["clipped"][name] == pytest.approx(want, rel=1e-3, abs=1e-8)
    assert sum(norm > 0.05 for raw in recorder.raw for norm in raw.values()) > 10  # clipping had work to do


#: what a DINO run logs (docs/dino.md#logged-metrics): the DINO loss per step and per epoch, the schedules per
#: step, the collapse diagnostics and KoLeo per epoch
LOGGED = {"train/loss_step", "train/loss_epoch", "train/lr", "train/wd", "train/momentum", "train/teacher_temp",
          "train/teacher_entropy", "train/teacher_batch_entropy", "train/kl", "train/koleo"}


def test_the_logged_metrics_are_the_documented_ones_with_the_schedules_values(tmp_path):
    """Lightning's CSVLogger over 2 epochs of batches of 4, 4 and 2: the columns are the documented names; each
    step's LR, weight decay and teacher momentum equal DINO's cosine schedules written in this file, the
    teacher temperature its warm-up (``np.linspace`` per epoch); the epoch loss is the sample-weighted mean of
    the step losses, KoLeo's the weighted mean of each step's term (the optimizer's loss minus the DINO loss, over
    0.1), and KL = loss - teacher entropy (both weighted alike) [the definitions, by hand]."""
    import csv

    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    m = tiny_module(koleo_weight=0.1, momentum_teacher=0.9, warmup_teacher_temp=0.02, teacher_temp=0.04,
                    warmup_teacher_temp_epochs=2)
    class Totals(pl.Callback):  # the loss the optimizer sees: DINO + 0.1 x KoLeo
        def __init__(self):
            self.values = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.values.append(float(outputs["loss"]))

    totals = Totals()
    loader = DataLoader(crops_loader(3).dataset[:10], batch_size=4)
    trainer = fit(m, 0, max_epochs=2, loader=loader, logger=CSVLogger(tmp_path, name="", version=""),
                  log_every_n_steps=1, callbacks=[totals])
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) - {"epoch", "step"} == LOGGED
    assert "train/loss_step" in trainer.progress_bar_metrics
    column = lambda name: [float(r[name]) for r in rows if r[name]]  # noqa: E731
    base = 5e-3 * 4 / 256
    for name, want in (("train/lr", reference_cosine(base, 1e-6, 2, 3)), ("train/wd", reference_cosine(0.04, 0.4, 2, 3)),
                       ("train/momentum", reference_cosine(0.9, 1.0, 2, 3)), ("train/teacher_temp", [0.02] * 3 + [0.04] * 3)):
        assert column(name) == pytest.approx(list(want), rel=1e-6), name
    steps, sizes = column("train/loss_step"), [4, 4, 2]
    for epoch, loss in enumerate(column("train/loss_epoch")):
        assert loss == pytest.approx(np.dot(steps[3 * epoch:3 * epoch + 3], sizes) / 10, rel=1e-6)
    for loss, entropy, kl in zip(column("train/loss_epoch"), column("train/teacher_entropy"), column("train/kl")):
        assert kl == pytest.approx(loss - entropy, rel=1e-5, abs=1e-6)
    koleo = (np.array(totals.values) - np.array(steps)) / 0.1  # each step's KoLeo term
    for epoch, value in enumerate(column("train/koleo")):  # per epoch, weighted by the batch sizes too
        assert value == pytest.approx(np.dot(koleo[3 * epoch:3 * epoch + 3], sizes) / 10, rel=1e-4)


def test_one_batch_an_epoch_gives_one_schedule_step_an_epoch():
    """Two epochs of one batch: the LR schedule has two entries, DINO's cosine over 2 x 1 iterations."""
    m = tiny_module(min_lr=0.0)
    fit(m, 1, max_epochs=2)
    assert list(m.lr_schedule) == pytest.approx(list(reference_cosine(5e-3 * 4 / 256, 0.0, 2, 1)), rel=1e-12)


NONFINITE = (r"^DINO loss became NaN/inf \(epoch 0, by step {}\)\. With precision=16-mixed this is usually fp16 "
             r"overflow: use precision=bf16-mixed or 32-true, or lower model\.optimizer\.lr\. With bf16-mixed on the "
             r"CPU \(precision=auto-bf16 picks it on CPUs with native bf16\), crops so small that a strided "
             r"convolution sees 1x1 maps \(16 px for ResNets\) can get non-finite gradients from oneDNN: use "
             r"precision=32-true or larger crops\.$")


@pytest.mark.parametrize("every, batches, step", [(1, 5, 1), (3, 5, 3), (10, 2, 2)])
def test_a_nonfinite_loss_stops_at_the_first_check_and_before_the_epochs_checkpoint(every, batches, step, tmp_path):
    """A NaN weight makes every loss NaN: the run stops at the first check (every ``every`` steps, and at the
    epoch's last batch), with the whole message; no epoch-end callback (a probe, an export) sees the broken
    model, and Lightning's epoch-end checkpoint of it is never written."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    class EpochEnds(pl.Callback):
        def __init__(self):
            self.seen = 0

        def on_train_epoch_end(self, trainer, pl_module):
            self.seen += 1

    m = tiny_module(nonfinite_check_every_n_steps=every)
    with torch.no_grad():
        next(m.student["backbone"].parameters()).fill_(float("nan"))
    saver, ends = ModelCheckpoint(dirpath=tmp_path, save_on_train_epoch_end=True, every_n_epochs=1), EpochEnds()
    with pytest.raises(NonFiniteLossError, match=NONFINITE.format(step)):
        fit(m, batches, callbacks=[ends, saver], enable_checkpointing=True)
    assert not list(tmp_path.glob("*.ckpt")) and ends.seen == 0


def test_batches_the_model_cannot_use_are_refused_in_one_sentence():
    """A batch of planned crops that were never rendered, and a batch with another number of crops, are each
    one error naming the fix; a rendered batch that keeps its plan (``aug``) trains."""
    m = tiny_module()
    with pytest.raises(ValueError, match=r"^the batch holds planned crops that were never rendered: "
                                         r"MultiCropAugmentation\(device=\.\.\.\) is rendered by FaceImageDataModule's "
                                         r"batch-transfer hooks; with another data module, set batch\['crops'\] = "
                                         r"transform\.batched\.render\(batch\) in its on_after_batch_transfer$"):
        m.training_step({"aug": 0}, 0)
    with pytest.raises(ValueError, match=r"^got 3 crops per image but the model expects 4 \(2 global \+ "
                                         r"model\.local_crops_number\); make data\.train_transform\.local_crops_number "
                                         r"match$"):
        m.training_step({"crops": [torch.zeros(1, 3, 32, 32)] * 3}, 0)
    from torch.utils.data import DataLoader

    planned = [dict(item, aug=0) for item in crops_loader(1).dataset]
    fit(tiny_module(), 0, loader=DataLoader(planned, batch_size=4))


def test_an_endless_trainer_is_refused():
    """DINO's schedules are per epoch: ``max_epochs=-1`` (Lightning's endless run) is one error; ``max_epochs=0``
    is Lightning's run that stops at once, and trains nothing."""
    with pytest.raises(ValueError, match=r"^DINO schedules are per epoch: set trainer\.max_epochs \(>0\)$"):
        fit(tiny_module(), 1, max_epochs=-1, max_steps=1)
    assert fit(tiny_module(), 1, max_epochs=0).global_step == 0
