"""frechet_distance against an independent scipy-sqrtm implementation and closed forms."""
import numpy as np
import pytest
import torch

from facefd.metrics import frechet_distance, psd_factor
from references import scipy_reference




def random_spd(rng, d, n=None):
    n = n or 4 * d
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    return np.cov(x, rowvar=False)


@pytest.mark.parametrize("d", [8, 64, 256, 257, 600])  # above 256 the triangular products run blockwise
def test_agrees_with_scipy_sqrtm_on_well_conditioned_inputs(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(scipy_reference(mu1, s1, mu2, s2), rel=1e-9)


def test_diagonal_gaussians_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3, 50), rng.uniform(0.1, 3, 50)
    mu1, mu2 = rng.normal(size=50), rng.normal(size=50)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-12)


def test_identical_inputs_give_zero():
    rng = np.random.default_rng(1)
    s = random_spd(rng, 128)
    mu = rng.normal(size=128) * 100
    assert frechet_distance(mu, s, mu, s) == 0.0 or frechet_distance(mu, s, mu, s) < 1e-9
    assert frechet_distance(mu, s, mu, s) >= 0.0


def test_rank_deficient_covariances_fewer_samples_than_dimensions():
    rng = np.random.default_rng(2)
    d = 64
    x1, x2 = rng.normal(size=(10, d)), rng.normal(size=(12, d)) + 0.5
    s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    fd = frechet_distance(x1.mean(0), s1, x2.mean(0), s2)
    # independent route: symmetric square roots by eigendecomposition, then the same trace identity
    w, v = np.linalg.eigh(s1)
    r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(r @ s2 @ r)
    diff = x1.mean(0) - x2.mean(0)
    want = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum()
    assert np.isfinite(fd) and fd >= 0
    # zero eigenvalues carry ~1e-15 noise whose square roots (~3e-8 each) bound the agreement
    assert fd == pytest.approx(want, rel=1e-7)
    # the non-symmetric eigvals route that torchmetrics uses meets negative / complex eigenvalues here
    ev = np.linalg.eigvals(s1 @ s2)
    assert (np.abs(ev.imag) > 0).any() or (ev.real < 0).any()


def test_cached_factor_gives_the_same_value():
    rng = np.random.default_rng(3)
    s1, s2 = random_spd(rng, 32), random_spd(rng, 32)
    mu1, mu2 = rng.normal(size=32), rng.normal(size=32)
    factor = psd_factor(torch.from_numpy(s1))
    assert frechet_distance(mu1, s1, mu2, s2, factor1=factor) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-12)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.array([np.nan, 0.0]), np.eye(2), np.zeros(2), np.eye(2))
    bad = np.eye(2)
    bad[0, 1] = np.inf
    for position, name in enumerate(("mu1", "sigma1", "mu2", "sigma2")):  # the message names the argument
        args = [np.zeros(2), np.eye(2), np.zeros(2), np.eye(2)]
        args[position] = np.array([np.inf, 0.0]) if position % 2 == 0 else bad
        with pytest.raises(ValueError, match=f"^{name} contains NaN or inf$"):
            frechet_distance(*args)


def test_each_shape_mismatch_alone_is_refused():
    ok = [np.zeros(3), np.eye(3), np.zeros(3), np.eye(3)]
    for position, bad in ((1, np.eye(4)), (2, np.zeros(4)), (3, np.eye(4))):
        args = list(ok)
        args[position] = bad
        with pytest.raises(ValueError, match="shape mismatch"):
            frechet_distance(*args)


def test_float32_inputs_are_computed_in_float64():
    """Means near 1e4 that differ by 1e-3, as float32 tensors: float64 arithmetic on the (exactly representable)
    float32 values gives scipy's value; float32 arithmetic would lose it to cancellation."""
    rng = np.random.default_rng(3)
    mu1 = (1e4 + rng.normal(size=16)).astype(np.float32)
    mu2 = (mu1.astype(np.float64) + 1e-3).astype(np.float32)
    s = random_spd(rng, 16).astype(np.float32)
    want = scipy_reference(mu1.astype(np.float64), s.astype(np.float64), mu2.astype(np.float64), s.astype(np.float64))
    got = frechet_distance(torch.from_numpy(mu1), torch.from_numpy(s), torch.from_numpy(mu2), torch.from_numpy(s))
    assert got == pytest.approx(want, rel=1e-6, abs=1e-12)


def test_psd_factor_is_cholesky_for_a_positive_definite_matrix():
    """R R^T = S for both kinds; for a positive-definite S, R is the lower-triangular Cholesky factor (numpy's)
    that the fast path of trace_sqrt_product relies on; for a singular S, an eigenvector factor."""
    rng = np.random.default_rng(4)
    s = random_spd(rng, 12)
    r = psd_factor(torch.from_numpy(s)).numpy()
    np.testing.assert_allclose(r, np.linalg.cholesky(s), atol=1e-12)
    singular = s[:, :6] @ s[:6, :]
    singular = singular @ singular.T
    r = psd_factor(torch.from_numpy(singular)).numpy()
    np.testing.assert_allclose(r @ r.T, singular, atol=1e-8 * np.abs(singular).max())
