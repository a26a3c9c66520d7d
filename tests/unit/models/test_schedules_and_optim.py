"""Cosine schedules, parameter groups, per-parameter clipping and LARS against hand formulas."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from facefd.models.dino import cosine_schedule
from facefd.models.optim import LARS, clip_gradients_per_parameter, regularization_groups


def test_cosine_schedule_values():
    base, final, epochs, niter, warm = 0.5, 0.01, 10, 7, 2
    s = cosine_schedule(base, final, epochs, niter, warmup_epochs=warm)
    assert len(s) == 70
    # linear warm-up from 0 over 14 iterations, hitting base on the 14th
    np.testing.assert_allclose(s[:14], np.linspace(0, base, 14))
    n = 70 - 14
    for i in (14, 20, 40, 69):
        k = i - 14
        assert s[i] == pytest.approx(final + 0.5 * (base - final) * (1 + math.cos(math.pi * k / n)))
    assert s[14] == pytest.approx(base)


def test_fractional_warmup_epochs_round_to_iterations():
    """warmup_epochs=0.5 of 10 iterations an epoch: a 5-iteration ramp from 0, then the cosine from base."""
    base, final = 0.4, 0.0
    s = cosine_schedule(base, final, 3, 10, warmup_epochs=0.5)
    assert len(s) == 30
    np.testing.assert_allclose(s[:5], [0.0, 0.1, 0.2, 0.3, 0.4])
    assert s[5] == pytest.approx(base)
    assert s[5 + 25 // 2] == pytest.approx(final + 0.5 * (base - final) * (1 + math.cos(math.pi * 12 / 25)))


def test_momentum_schedule_rises_to_one():
    s = cosine_schedule(0.996, 1.0, 100, 10)
    assert s[0] == pytest.approx(0.996)
    assert np.all(np.diff(s) >= 0)
    assert s[-1] == pytest.approx(1.0, abs=1e-6)


def test_regularization_groups_exclude_bias_and_norm():
    m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    decayed, plain = regularization_groups([m])
    assert {id(p) for p in decayed["params"]} == {id(m[0].weight), id(m[2].weight)}
    assert {id(p) for p in plain["params"]} == {id(m[0].bias), id(m[1].weight), id(m[1].bias), id(m[2].bias)}
    assert plain["weight_decay"] == 0.0


def test_clipping_is_per_parameter():
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([3.0, 4.0, 0.0])  # norm 5 -> scaled to norm 3
    b.grad = torch.tensor([0.3, 0.4])  # norm 0.5 -> untouched
    clip_gradients_per_parameter([a, b], 3.0)
    np.testing.assert_allclose(a.grad.numpy(), np.array([3.0, 4.0, 0.0]) * 3 / (5 + 1e-6), rtol=1e-6)
    np.testing.assert_allclose(b.grad.numpy(), [0.3, 0.4])
    # a global-norm clip would also have scaled b: the two rules differ
    assert torch.linalg.vector_norm(torch.cat([a.grad, b.grad])) > 3.0


def test_lars_step_matches_formula():
    w = nn.Parameter(torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    bias = nn.Parameter(torch.tensor([0.5, -0.5]))
    w.grad = torch.tensor([[0.1, 0.0], [0.0, 0.2]])
    bias.grad = torch.tensor([1.0, 1.0])
    opt = LARS([w, bias], lr=0.1, weight_decay=0.01, momentum=0.9, eta=0.001)
    w0, b0 = w.detach().clone(), bias.detach().clone()
    opt.step()
    dp = w.grad + 0.01 * w0
    q = 0.001 * torch.norm(w0) / torch.norm(dp)
    torch.testing.assert_close(w.detach(), w0 - 0.1 * q * dp)
    torch.testing.assert_close(bias.detach(), b0 - 0.1 * bias.grad)  # 1-d: no decay, no scaling


def test_lars_defaults_are_the_references_over_two_steps():
    """DINO's ``utils.LARS(params, lr=0, weight_decay=0, momentum=0.9, eta=0.001)``: with only the LR given,
    two steps follow the reference's update written here (momentum buffer mu = 0.9 mu + q dp)."""
    assert {k: LARS([nn.Parameter(torch.ones(2, 2))]).defaults[k] for k in ("lr", "weight_decay", "momentum", "eta")} \
        == {"lr": 0, "weight_decay": 0, "momentum": 0.9, "eta": 0.001}
    w = nn.Parameter(torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    opt = LARS([w], lr=0.5)
    mu, expected = torch.zeros(2, 2), w.detach().clone()
    for grad in (torch.tensor([[0.1, 0.0], [0.0, 0.2]]), torch.tensor([[0.0, -0.3], [0.1, 0.0]])):
        w.grad = grad.clone()
        q = 0.001 * torch.norm(expected) / torch.norm(grad)
        mu = 0.9 * mu + q * grad
        expected = expected - 0.5 * mu
        opt.step()
        torch.testing.assert_close(w.detach(), expected)


def test_groups_follow_dinos_get_params_groups_for_odd_parameters():
    """main_dino's rule: a name ending in ``.bias`` or a 1-d tensor is not decayed (so a 2-d bias is not),
    and frozen parameters are skipped without dropping the ones after them."""
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.frozen = nn.Parameter(torch.ones(3, 3), requires_grad=False)
            self.proj = nn.Linear(3, 3)
            self.proj.bias = nn.Parameter(torch.zeros(1, 3))  # a 2-d bias (as some attention blocks keep)
            self.scale = nn.Parameter(torch.ones(1))

    m = Odd()
    decayed, plain = regularization_groups([m])
    assert [id(p) for p in decayed["params"]] == [id(m.proj.weight)]
    assert {id(p) for p in plain["params"]} == {id(m.proj.bias), id(m.scale)}
