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
