"""DINOLoss and the teacher temperature, against a float64 re-derivation of the paper's formulas."""
import math

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, softmax

from facefd.models.dino import DINOLoss, teacher_temperature_schedule


def reference_loss(student, teacher, center, ncrops, student_temp, teacher_temp):
    """H(P_t(x_g), P_s(x')) averaged over pairs of different views (Caron et al., Alg. 1 / main_dino.py)."""
    s = np.split(student / student_temp, ncrops)
    t = np.split(softmax((teacher - center) / teacher_temp, axis=-1), 2)
    terms = [np.mean(np.sum(-t[iq] * log_softmax(s[v], axis=-1), axis=-1))
             for iq in range(2) for v in range(ncrops) if v != iq]
    assert len(terms) == 2 * ncrops - 2
    return float(np.mean(terms))


@pytest.mark.parametrize("ncrops", [2, 4, 6])
def test_loss_matches_reference_formula(ncrops):
    rng = np.random.default_rng(ncrops)
    batch, dim = 5, 32
    student = rng.normal(size=(ncrops * batch, dim))
    teacher = rng.normal(size=(2 * batch, dim))
    center = rng.normal(size=(1, dim)) * 0.1
    loss_fn = DINOLoss(dim, ncrops, 0.04, 0.04, 0, 10)
    loss_fn.center.copy_(torch.tensor(center, dtype=torch.float32))
    got = loss_fn(torch.tensor(student, dtype=torch.float32), torch.tensor(teacher, dtype=torch.float32), epoch=0)
    want = reference_loss(student, teacher, center, ncrops, 0.1, 0.04)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_uniform_outputs_give_log_out_dim():
    # Constant outputs: teacher and student both uniform, so the cross-entropy is ln(K) exactly.
    k = 1000
    loss_fn = DINOLoss(k, 4, 0.04, 0.04, 0, 10)
    loss = loss_fn(torch.zeros(4 * 3, k), torch.zeros(2 * 3, k), epoch=0)
    assert loss.item() == pytest.approx(math.log(k), rel=1e-6)


def test_center_is_ema_of_batch_mean():
    rng = np.random.default_rng(0)
    dim = 16
    loss_fn = DINOLoss(dim, 2, 0.04, 0.04, 0, 10, center_momentum=0.9)
    c = np.zeros((1, dim))
    for _ in range(3):
        t = rng.normal(size=(8, dim))
        loss_fn(torch.zeros(8, dim), torch.tensor(t, dtype=torch.float32), epoch=0)
        c = 0.9 * c + 0.1 * t.mean(axis=0, keepdims=True)
    np.testing.assert_allclose(loss_fn.center.numpy(), c, rtol=1e-5, atol=1e-6)


def test_loss_uses_center_before_updating_it():
    dim = 8
    t = torch.randn(4, dim)
    s = torch.randn(4, dim)
    loss_fn = DINOLoss(dim, 2, 0.04, 0.04, 0, 10)
    loss_fn.center.fill_(0.3)
    got = loss_fn(s, t, epoch=0).item()
    want = reference_loss(s.double().numpy(), t.double().numpy(), np.full((1, dim), 0.3), 2, 0.1, 0.04)
    assert got == pytest.approx(want, rel=1e-5)


def test_deferred_center_applies_once_with_mean_of_microbatches():
    rng = np.random.default_rng(1)
    dim = 8
    loss_fn = DINOLoss(dim, 2, 0.04, 0.04, 0, 10, defer_center_update=True)
    t1, t2 = rng.normal(size=(4, dim)), rng.normal(size=(6, dim))
    loss_fn(torch.zeros(4, dim), torch.tensor(t1, dtype=torch.float32), epoch=0)
    loss_fn(torch.zeros(6, dim), torch.tensor(t2, dtype=torch.float32), epoch=0)
    assert torch.count_nonzero(loss_fn.center) == 0  # nothing applied per micro-batch
    loss_fn.apply_center_update()
    want = 0.1 * np.concatenate([t1, t2]).mean(axis=0, keepdims=True)
    np.testing.assert_allclose(loss_fn.center.numpy(), want, rtol=1e-5, atol=1e-6)
    loss_fn.apply_center_update()  # nothing pending: unchanged
    np.testing.assert_allclose(loss_fn.center.numpy(), want, rtol=1e-5, atol=1e-6)


def test_center_is_a_checkpointed_buffer():
    loss_fn = DINOLoss(8, 2, 0.04, 0.04, 0, 10)
    assert "center" in loss_fn.state_dict()
    assert "_pending_sum" not in loss_fn.state_dict()


def test_teacher_temperature_warmup():
    sched = teacher_temperature_schedule(0.04, 0.07, 30, 100)
    assert len(sched) == 100
    assert sched[0] == pytest.approx(0.04)
    assert sched[29] == pytest.approx(0.07)
    assert sched[15] == pytest.approx(0.04 + 15 * (0.03 / 29))  # linspace step over 30 points
    assert np.all(sched[30:] == 0.07)
    loss_fn = DINOLoss(8, 2, 0.04, 0.07, 30, 100)
    assert loss_fn.teacher_temp(500) == pytest.approx(0.07)  # past the schedule: the last value


@pytest.mark.parametrize("warmup_epochs,nepochs", [(30, 100), (5, 5), (0, 3), (1, 2)])
def test_temperature_schedule_is_dinos_array_and_clamps_past_its_end(warmup_epochs, nepochs):
    """main_dino.py's array, length and values: linspace over the warm-up, then the final value; past the
    last epoch (a resumed run trained longer) the last value, where the reference would index out of range."""
    want = np.concatenate((np.linspace(0.04, 0.07, warmup_epochs), np.ones(nepochs - warmup_epochs) * 0.07))
    got = teacher_temperature_schedule(0.04, 0.07, warmup_epochs, nepochs)
    assert got.shape == want.shape and np.array_equal(got, want)
    loss_fn = DINOLoss(8, 2, 0.04, 0.07, warmup_epochs, nepochs)
    assert [loss_fn.teacher_temp(e) for e in range(nepochs + 3)] == [want[min(e, nepochs - 1)] for e in range(nepochs + 3)]


def test_last_entropies_are_the_teachers_targets_entropies():
    """What the collapse diagnostics read after each step: mean per-row entropy of the centred, sharpened
    teacher softmax, and the entropy of its batch mean (scipy's softmax and entropy by hand)."""
    rng = np.random.default_rng(3)
    student, teacher = rng.normal(size=(4 * 6, 16)), rng.normal(size=(2 * 6, 16))
    loss_fn = DINOLoss(16, 4, 0.2, 0.2, 0, 1)
    assert loss_fn.last_entropies is None  # nothing to report before the first step
    loss_fn(torch.tensor(student, dtype=torch.float32), torch.tensor(teacher, dtype=torch.float32), epoch=0)
    q = softmax(teacher / 0.2, axis=-1)
    mean = q.mean(0)
    want = (float(np.mean(-(q * np.log(q)).sum(1))), float(-(mean * np.log(mean)).sum()))
    assert [float(h) for h in loss_fn.last_entropies] == pytest.approx(want, rel=1e-5)
