"""DINOModule inside a real Lightning Trainer: teacher isolation, EMA, frozen last layer,
center updates per optimizer step, NaN guard."""

import lightning.pytorch as pl
import pytest
import torch

from facefd.models.dino.module import NonFiniteLossError
from runs import crops_loader, tiny_module






def fit(module, n_batches, **trainer_kw):
    trainer = pl.Trainer(accelerator="cpu", max_epochs=trainer_kw.pop("max_epochs", 1), logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         **trainer_kw)
    trainer.fit(module, crops_loader(n_batches))
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
    with pytest.raises(ValueError, match="model.clip_grad"):
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
