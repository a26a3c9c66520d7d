"""The metric and FDDCallback through Lightning's own loop with 2 processes, as users run them:
``ddp_spawn`` and ``ddp`` (script re-launch), ``compute()`` in a hook and ``self.log(metric)``, with
``lightning.pytorch`` and ``pytorch_lightning``. Each run is a subprocess (``ddp`` re-runs its script)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facefd.metrics import FrechetDistance
from lightning_fd import PooledColour, RealFakePairs, make_images, rank_samples
from references import reference_cmmd, scipy_reference

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).parents[1] / "support" / "lightning_fd.py"


def _features(images) -> np.ndarray:
    return PooledColour()(images.float() / 255).double().numpy()


def _fd(a: np.ndarray, b: np.ndarray) -> float:
    return scipy_reference(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def _result_path(tmp_path) -> Path:
    return tmp_path / "result"


def _run(tmp_path, *args) -> Path:
    out = _result_path(tmp_path)
    proc = subprocess.run([sys.executable, str(SCRIPT), *args[:3], str(out), *args[3:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.parametrize("flavour,strategy,mode", [
    ("lightning.pytorch", "ddp_spawn", "compute"), ("pytorch_lightning", "ddp_spawn", "compute"),
    ("lightning.pytorch", "ddp", "log"), ("pytorch_lightning", "ddp", "log")])
def test_two_processes_give_the_single_process_value(tmp_path, flavour, strategy, mode):
    pairs = RealFakePairs()
    want = _fd(_features(pairs.real), _features(pairs.fake))  # all 240 + 240 images, scipy
    value, real_after, fake_after = _run(tmp_path, flavour, strategy, "2", mode).read_text().split()
    assert float(value) == pytest.approx(want, rel=1e-9)
    if mode == "compute":  # after compute each rank holds its own 120 images again (unsynced)
        assert (int(real_after), int(fake_after)) == (120, 120)
        # CMMD of the same images, gathered from both ranks, against the reference definition in numpy
        cmmd = float(Path(str(_result_path(tmp_path)) + ".cmmd").read_text().split()[0])
        unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
        emb_real, emb_fake = (PooledColour()(x).double().numpy() for x in (pairs.real, pairs.fake))
        assert cmmd == pytest.approx(reference_cmmd(unit(emb_real), unit(emb_fake)), rel=1e-9)


@pytest.mark.parametrize("mode", ["callback", "callback-loader"])
def test_fdd_callback_under_ddp_spawn(tmp_path, mode):
    """callback: the real set as a statistics file; callback-loader: as a DataLoader of the same 240 images,
    whose statistics every rank computes from its share of the batches, gathered."""
    real = make_images(240, 0, 0.0)
    reference = FrechetDistance(PooledColour())
    reference.update(real, real=True)
    ref_path = reference.save_reference(tmp_path / "ref.npz")
    result = _run(tmp_path, "lightning.pytorch", "ddp_spawn", "2", mode, str(ref_path))
    logged = [float(v) for v in result.read_text().split()]
    fr = _features(real)
    assert len(logged) == 2
    for epoch, value in enumerate(logged):
        # 45 samples: rank 0 draws 23 (10 + 10 + 3), rank 1 draws 22 (10 + 10 + 2)
        drawn = [rank_samples(epoch, r, n, i) for r, sizes in ((0, (10, 10, 3)), (1, (10, 10, 2)))
                 for i, n in enumerate(sizes)]
        ff = np.concatenate([_features(x) for x in drawn])
        assert ff.shape[0] == 45
        assert value == pytest.approx(_fd(fr, ff), rel=1e-6)  # logged as float32
