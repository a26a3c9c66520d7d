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


def test_float32_embeddings_are_computed_in_float64():
    """Two sets 1e-3 apart: float32 arithmetic would lose the value (kernel sums near 1, differences near
    1e-8); numpy's float64 reference on the same float32 numbers is met to 1e-6, by the function and by the
    metric's own normalisation."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 16)).astype(np.float32)
    y = (x + 1e-3 * rng.normal(size=x.shape)).astype(np.float32)
    assert mmd_rbf(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(
        reference_cmmd(x.astype(np.float64), y.astype(np.float64)), rel=1e-6)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    metric = CMMD()
    metric.update_features(torch.from_numpy(x), real=True)
    metric.update_features(torch.from_numpy(y), real=False)
    assert float(metric.compute()) == pytest.approx(
        reference_cmmd(unit(x.astype(np.float64)), unit(y.astype(np.float64))), rel=1e-6)


@pytest.mark.parametrize("x_shape,y_shape", [((2, 3, 1), (2, 3)), ((2, 3), (3,)), ((2, 3), (2, 4))])
def test_each_shape_mistake_is_named(x_shape, y_shape):
    with pytest.raises(ValueError, match=rf"same D, got {tuple(x_shape)} and {tuple(y_shape)}".replace("(", r"\(")
                       .replace(")", r"\)")):
        mmd_rbf(torch.zeros(x_shape), torch.zeros(y_shape))
    with pytest.raises(ValueError, match=r"embeddings must be \[N, D\], got \(3,\)"):
        CMMD().update_features(torch.zeros(3), real=True)


def test_one_embedding_each_and_an_empty_set():
    """One embedding per set is enough: 1000 * (1 + 1 - 2 exp(-d^2 / 200)) by hand. Embeddings far from unit
    norm are normalised (here to (1, 0) and (0, 1): d^2 = 2); an empty set is refused by name."""
    metric = CMMD()
    metric.update_features(torch.tensor([[0.25, 0.0]]), real=True)
    metric.update_features(torch.tensor([[0.0, 4.0]]), real=False)
    assert float(metric.compute()) == pytest.approx(1000 * (2 - 2 * np.exp(-2 / 200)), rel=1e-12)
    unscaled = CMMD(scale=1.0, sigma=1.0)
    unscaled.update_features(torch.tensor([[0.25, 0.0]]), real=True)
    unscaled.update_features(torch.tensor([[0.0, 4.0]]), real=False)
    assert float(unscaled.compute()) == pytest.approx(2 - 2 * np.exp(-1.0), rel=1e-12)
    for real in (True, False):
        half = CMMD()
        half.update_features(torch.ones(2, 3), real=real)
        half.update_features(torch.zeros(0, 3), real=not real)
        with pytest.raises(RuntimeError, match="^CMMD needs embeddings of both sets$"):
            half.compute()


def test_update_count_and_a_frozen_embedder():
    """torchmetrics' ``update_count`` counts feature updates as it counts ``update`` calls, and the embedder
    is never trained (no parameter asks for a gradient, eval mode even after ``.train()``)."""
    embedder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(3 * 4 * 4, 6))
    metric = CMMD(embedder)
    assert not any(p.requires_grad for p in embedder.parameters())
    metric.train()
    assert metric.training and not embedder.training
    images = torch.rand(5, 3, 4, 4)
    metric.update(images, real=True)
    metric.update_features(torch.rand(4, 6), real=False)
    metric.update_features(torch.rand(4, 6), real=False)
    assert metric.update_count == 3
