"""CMMD's formula against the CMMD paper's reference definition written here in numpy (biased MMD^2,
RBF with sigma 10, times 1000), chunked sums equal to the full matrix, and the streaming metric."""
import numpy as np
import pytest
import torch

from facefd import CMMD
from facefd.metrics.mmd import mmd_rbf
from references import reference_cmmd


def test_the_formula_equals_the_reference_and_chunks_change_nothing():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(70, 16)) * 3, rng.normal(size=(50, 16)) * 3 + 1.5
    want = reference_cmmd(x, y)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    assert mmd_rbf(tx, ty) == pytest.approx(want, rel=1e-10)
    assert mmd_rbf(tx, ty, chunk=7) == pytest.approx(want, rel=1e-10)  # blocks of 7 rows: same sums
    assert mmd_rbf(tx, ty, sigma=2.0, scale=1.0) == pytest.approx(reference_cmmd(x, y, 2.0, 1.0), rel=1e-10)
    assert mmd_rbf(tx, tx) == pytest.approx(0.0, abs=1e-9)


def test_the_metric_streams_normalised_embeddings_and_merges():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 8)), rng.normal(size=(30, 8)) + 0.5
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731 - CLIP embeddings are L2-normalised
    metric, other = CMMD(), CMMD()
    for chunk in np.array_split(x, 3):
        metric.update_features(torch.from_numpy(chunk), real=True)
    metric.update_features(torch.from_numpy(y[:10]), real=False)
    other.update_features(torch.from_numpy(y[10:]), real=False)
    metric.merge_state(other)  # what the cat reduction does across processes
    assert float(metric.compute()) == pytest.approx(reference_cmmd(unit(x), unit(y)), rel=1e-10)


def test_images_go_through_the_embedder():
    embedder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 6))
    metric = CMMD(embedder)
    images = torch.rand(5, 3, 4, 4)
    metric.update(images, real=True)
    metric.update(images, real=False)
    assert float(metric.compute()) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(RuntimeError, match="no embedder"):
        CMMD().update(images, real=True)
