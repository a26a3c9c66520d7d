"""KoLeo regulariser: the value against scipy's pairwise distances, its effect, and its place in DINO's step."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from facefd.models.dino.koleo import koleo_loss
from runs import crops_loader, tiny_module


def test_koleo_equals_the_nearest_neighbour_entropy_estimator():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 9))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = cdist(unit, unit)
    np.fill_diagonal(d, np.inf)
    expected = -np.log(d.min(axis=1)).mean()
    assert koleo_loss(torch.tensor(x)).item() == pytest.approx(expected, rel=1e-6)
    # scale-free: only directions count
    assert koleo_loss(torch.tensor(3.0 * x)).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        koleo_loss(torch.ones(1, 4))


def test_minimising_koleo_spreads_collapsed_features():
    torch.manual_seed(0)
    # features that live near one direction (what a collapsed backbone gives)
    x = (torch.tensor([1.0] + [0.0] * 15) + 0.05 * torch.randn(64, 16)).requires_grad_(True)
    opt = torch.optim.SGD([x], lr=0.05)

    def top_share(v):
        v = torch.nn.functional.normalize(v.detach(), dim=1)
        s = torch.linalg.svdvals(v - v.mean(0)) ** 2
        return (s[0] / s.sum()).item(), torch.cdist(v, v).add(torch.eye(len(v)) * 9).min(1).values.mean().item()

    share0, nn0 = top_share(x)
    for _ in range(200):
        opt.zero_grad()
        koleo_loss(x).backward()
        opt.step()
    share1, nn1 = top_share(x)
    assert nn1 > 3 * nn0  # nearest neighbours much further apart
    assert share1 < share0  # and the variance less concentrated


def test_dino_step_adds_weighted_koleo_but_logs_the_dino_loss():
    batch = next(iter(crops_loader(1)))
    plain, with_koleo = tiny_module(), tiny_module(koleo_weight=0.5)
    with_koleo.load_state_dict(plain.state_dict())
    logged: dict[int, dict] = {id(plain): {}, id(with_koleo): {}}
    for m in (plain, with_koleo):
        m.log = lambda name, value, _into=logged[id(m)], **kw: _into.__setitem__(name, value)  # noqa: B008  (binds each module's dict)
    # the two modules hold the same weights: their DINO losses agree, the total differs by 0.5 * KoLeo
    torch.manual_seed(0)
    loss_plain = plain.training_step(batch, 0)
    torch.manual_seed(0)
    loss_koleo = with_koleo.training_step(batch, 0)
    crops = batch["crops"]
    features = plain.student["backbone"](torch.cat(crops[:2]))
    koleo = koleo_loss(features[:4]) + koleo_loss(features[4:])
    assert loss_koleo.item() == pytest.approx(loss_plain.item() + 0.5 * koleo.item(), rel=1e-5)
    assert logged[id(with_koleo)]["train/loss"].item() == pytest.approx(loss_plain.item(), rel=1e-6)
    assert "train/koleo" not in logged[id(plain)]
    assert logged[id(with_koleo)]["train/koleo"].item() == pytest.approx(koleo.item(), rel=1e-5)


def test_two_points_and_duplicates():
    """The smallest batch, N = 2: each point's neighbour is the other, so the loss is -log of their distance on
    the unit sphere (by hand). Duplicated rows give a finite loss: torch's pairwise_distance adds eps to the
    difference (||x - y + eps||, here eps * sqrt(8)), and the log adds eps again."""
    import math

    from facefd.models.dino.koleo import koleo_loss

    a, b = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 2.0])
    distance = float(torch.linalg.norm(a / a.norm() - b / b.norm()))
    assert float(koleo_loss(torch.stack([a, b]))) == pytest.approx(-math.log(distance), rel=1e-6)
    same = koleo_loss(torch.ones(4, 8))
    assert torch.isfinite(same) and float(same) == pytest.approx(-math.log(1e-8 * math.sqrt(8) + 1e-8), rel=1e-4)
    with pytest.raises(ValueError, match="N >= 2"):
        koleo_loss(torch.ones(1, 8))
