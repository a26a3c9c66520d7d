"""Sinkhorn-Knopp teacher targets: a hand-solved case, equal shares, DDP equals one process, and the loss option."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from facefd.models.dino.loss import DINOLoss, sinkhorn_knopp


def swav_sinkhorn(logits: np.ndarray, eps: float, iterations: int) -> np.ndarray:
    """SwAV's ``distributed_sinkhorn`` on one process, in float64: exp, normalise the total, then alternately
    give each prototype 1/K and each sample 1/B of the mass; rows scaled back to sum to 1."""
    q = np.exp(logits / eps).T  # K x B
    q /= q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True) * k
        q /= q.sum(axis=0, keepdims=True) * b
    return (q * b).T


@pytest.mark.parametrize("iterations", [None, 1, 5])
def test_equals_swavs_algorithm(iterations):
    """The default is SwAV's and DINOv2's 3 rounds."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20, 7)) + np.linspace(0, 2, 7)
    kw = {} if iterations is None else {"iterations": iterations}
    got = sinkhorn_knopp(torch.tensor(logits, dtype=torch.float32), 0.2, **kw).double().numpy()
    np.testing.assert_allclose(got, swav_sinkhorn(logits, 0.2, iterations or 3), rtol=2e-5, atol=1e-7)


def test_two_by_two_matches_the_closed_form():
    # A 2x2 matrix scaled to doubly stochastic is [[p, 1-p], [1-p, p]]; diagonal scaling keeps the cross
    # ratio e11*e22/(e12*e21), so p^2/(1-p)^2 equals it: p = r / (1 + r) with r = its square root.
    logits = torch.tensor([[0.3, -0.2], [0.1, 0.4]])
    t = 0.5
    e = torch.exp(logits / t)
    r = math.sqrt(e[0, 0] * e[1, 1] / (e[0, 1] * e[1, 0]))
    p = r / (1 + r)
    q = sinkhorn_knopp(logits, t, iterations=200)
    torch.testing.assert_close(q, torch.tensor([[p, 1 - p], [1 - p, p]]), atol=1e-6, rtol=0)


def test_rows_are_distributions_and_prototypes_get_equal_shares():
    torch.manual_seed(0)
    logits = torch.randn(48, 12) + torch.linspace(0, 3, 12)  # the teacher prefers the last prototypes
    softmax_share = torch.softmax(logits / 0.2, dim=1).sum(0)
    spread = []
    for iterations in (1, 3, 300):
        q = sinkhorn_knopp(logits, 0.2, iterations)
        torch.testing.assert_close(q.sum(1), torch.ones(48))
        spread.append(float((q.sum(0) - 48 / 12).abs().max()))
    assert float((softmax_share - 4).abs().max()) > 4 * spread[1]  # 3 rounds: already far more even than softmax
    assert spread[0] > spread[1] > spread[2] and spread[2] < 1e-3
    # a sharper temperature keeps rows peaked: each row's mass sits mostly on one prototype
    assert sinkhorn_knopp(logits, 0.02, 30).max(1).values.mean() > 0.9


def _worker(rank: int, world: int, init_file: str, logits: torch.Tensor, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    mine = logits[:10] if rank == 0 else logits[10:]  # uneven shares
    torch.save(sinkhorn_knopp(mine, 0.1, 3), f"{out}_{rank}.pt")
    # DINO's sharp teacher temperature on large logits: exp() needs the global maximum, not a sum of peaks
    torch.save(sinkhorn_knopp(mine * 10, 0.01, 3), f"{out}_sharp_{rank}.pt")
    dist.destroy_process_group()


def test_two_processes_equal_one(tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    torch.manual_seed(1)
    logits = torch.randn(24, 8)
    logits[10:] += 3.0  # rank 1's logits are larger: its exp needs the global maximum, not its own
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), logits, str(tmp_path / "q")), nprocs=2, join=True)
    both = torch.cat([torch.load(tmp_path / f"q_{rank}.pt") for rank in range(2)])
    torch.testing.assert_close(both, sinkhorn_knopp(logits, 0.1, 3), atol=1e-6, rtol=1e-5)
    sharp = torch.cat([torch.load(tmp_path / f"q_sharp_{rank}.pt") for rank in range(2)])
    assert torch.isfinite(sharp).all()
    torch.testing.assert_close(sharp, sinkhorn_knopp(logits * 10, 0.01, 3), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("iterations", [None, 1, 5])
def test_loss_uses_sinkhorn_targets(iterations):
    """The loss's targets are SwAV's (written above) with the loss's own number of rounds (3 by default)."""
    torch.manual_seed(0)
    b, k = 6, 5
    student, teacher = torch.randn(4 * b, k), torch.randn(2 * b, k)
    kw = {} if iterations is None else {"sinkhorn_iterations": iterations}
    loss = DINOLoss(k, ncrops=4, warmup_teacher_temp=0.07, teacher_temp=0.07, warmup_teacher_temp_epochs=0,
                    nepochs=1, centering="sinkhorn", **kw)
    q = swav_sinkhorn(teacher.double().numpy(), 0.07, iterations or 3)
    s = torch.log_softmax(student / 0.1, dim=1).numpy()
    pairs = [(iq, v) for iq in range(2) for v in range(4) if v != iq]
    want = np.mean([-(q[iq * b:(iq + 1) * b] * s[v * b:(v + 1) * b]).sum(1).mean() for iq, v in pairs])
    assert loss(student, teacher, 0).item() == pytest.approx(want, rel=1e-5)
    if iterations is not None:
        return
    with pytest.raises(ValueError, match="centering"):
        DINOLoss(k, 4, 0.04, 0.04, 0, 1, centering="mean")
    with pytest.raises(ValueError, match="sinkhorn_iterations"):
        DINOLoss(k, 4, 0.04, 0.04, 0, 1, centering="sinkhorn", sinkhorn_iterations=0)
