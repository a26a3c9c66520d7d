"""Two CPU processes (gloo): the synchronised metric equals the single-process value."""
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from facefd import FrechetDistance, frechet_distance


class Width6(nn.Module):
    num_features = 6

    def forward(self, x):  # pragma: no cover - features are fed directly
        raise AssertionError


def _worker(rank: int, world: int, init_file: str, real: np.ndarray, fake: np.ndarray, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    m = FrechetDistance(Width6(), reservoir_size=256)
    # uneven shares and different first batches, so each rank has its own shift
    mine_r = real[:70] if rank == 0 else real[70:]
    mine_f = fake[:45] if rank == 0 else fake[45:]
    for part in np.array_split(mine_r, 3):
        m.update_features(torch.from_numpy(part), real=True)
    m.update_features(torch.from_numpy(mine_f), real=False)
    value = m.compute().item()  # every rank computes (rank 0 alone would hang)
    p = m.compute_prdc(k=5)  # reservoirs of both ranks merged
    kid = m.compute_kid(subsets=3, subset_size=50, seed=1)
    ci = m.compute_ci(n_boot=4, seed=2)
    fd_inf = m.compute_fd_infinity(num_points=3)
    with m.sync_context():
        merged_r, merged_f = m.features(True), m.features(False)
    np.savez(f"{out}_{rank}_merged.npz", real=merged_r.numpy(), fake=merged_f.numpy(),
             local_fake=m.features(False).numpy())  # after the extras: this rank's own reservoir again
    np.save(f"{out}_{rank}.npy", np.array([value, m.last_counts["real"], m.last_counts["fake"],
                                           p["precision"], p["recall"], p["density"], p["coverage"],
                                           kid["kid_mean"], kid["kid_std"], ci["n_fake_resampled"],
                                           max(fd_inf["sizes"])]))
    dist.destroy_process_group()


def test_two_processes_equal_one(tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    rng = np.random.default_rng(0)
    real = rng.normal(size=(100, 6)) * 2 + 30
    real[70:] += 5  # rank 1's data sits elsewhere: its shift differs from rank 0's
    fake = rng.normal(size=(80, 6)) + 31
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), real, fake, str(tmp_path / "out")), nprocs=2, join=True)
    want = frechet_distance(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))
    from references import brute_prdc

    want_prdc = brute_prdc(real.astype(np.float32).astype(np.float64), fake.astype(np.float32).astype(np.float64), 5)
    from facefd.metrics.kernels import kid

    for rank in range(2):
        value, n_real, n_fake, *prdc, kid_mean, kid_std, n_resampled, largest = np.load(tmp_path / f"out_{rank}.npy")
        assert value == pytest.approx(want, rel=1e-10)
        assert (n_real, n_fake) == (100, 80)
        assert prdc == pytest.approx([want_prdc[k] for k in ("precision", "recall", "density", "coverage")], abs=1e-12)
        # KID, the bootstrap and FD∞ read both ranks' reservoirs (80 generated rows, not this rank's 45 or 35) ...
        merged = np.load(tmp_path / f"out_{rank}_merged.npz")
        assert sorted(merged["fake"][:, 0]) == pytest.approx(sorted(fake[:, 0].astype(np.float32)))
        want_kid = kid(torch.from_numpy(merged["real"]), torch.from_numpy(merged["fake"]), 3, 50,
                       torch.Generator().manual_seed(1))
        assert (kid_mean, kid_std) == (pytest.approx(want_kid[0], rel=1e-9), pytest.approx(want_kid[1], rel=1e-9))
        assert (n_resampled, largest) == (80, 80)
        # ... and leave each rank's own state as it was
        assert len(merged["local_fake"]) == (45, 35)[rank]
