"""The closed-loop logistic probe against scipy's L-BFGS-B on the objective written out in numpy: the optimum
per attribute, several attributes fitted at once, constant features, and the probabilities by hand."""
import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from facefd.models.probe.logistic import fit_logistic_probe


def reference_fit(z: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """argmin of mean BCE + l2/2 ||w||^2 over (w, b) on standardised features ``z`` (numpy, scipy)."""
    d = z.shape[1]

    def objective(theta):
        w, b = theta[:d], theta[d]
        s = z @ w + b
        loss = np.mean(np.logaddexp(0, s) - y * s) + 0.5 * l2 * w @ w
        p = 1 / (1 + np.exp(-s))
        grad = np.concatenate([z.T @ (p - y) / len(y) + l2 * w, [np.mean(p - y)]])
        return loss, grad

    return minimize(objective, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                    options={"gtol": 1e-12, "ftol": 1e-15}).x


def test_logistic_probe_matches_scipy_optimum():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 5)) * np.array([1.0, 3.0, 0.5, 2.0, 1.0]) + 4.0
    y = ((x[:, 0] - 4.0) + 0.5 * rng.normal(size=300) > 0).astype(np.float64)
    l2 = 0.01
    z = (x - x.mean(0)) / x.std(0, ddof=1)
    ref = reference_fit(z, y, l2)
    probe = fit_logistic_probe(torch.from_numpy(x), torch.from_numpy(y[:, None]), l2=l2)
    np.testing.assert_allclose(probe.weight[:, 0].numpy(), ref[:5], atol=1e-5)
    np.testing.assert_allclose(float(probe.bias[0]), ref[5], atol=1e-5)


def test_several_attributes_at_once_equal_each_alone_and_the_probabilities_by_hand():
    """Two attributes in one fit (the default l2 = 1e-3), each equal to its own scipy optimum; a constant
    feature column gets no weight and no NaN; probabilities are sigmoid(standardised x @ w + b) by hand."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 4)) * np.array([2.0, 1.0, 0.5, 0.0]) + np.array([1.0, -2.0, 0.0, 3.0])
    y = np.stack([(x[:, 0] + rng.normal(size=200) > 1).astype(float), (x[:, 1] - x[:, 2] + rng.normal(size=200) > -2).astype(float)], 1)
    probe = fit_logistic_probe(torch.from_numpy(x), torch.from_numpy(y))
    mean, std = x.mean(0), x.std(0, ddof=1)
    np.testing.assert_allclose(probe.mean.numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(probe.std.numpy()[:3], std[:3], rtol=1e-12)
    z = (x[:, :3] - mean[:3]) / std[:3]
    for a in range(2):
        ref = reference_fit(z, y[:, a], 1e-3)
        np.testing.assert_allclose(probe.weight[:3, a].numpy(), ref[:3], atol=1e-5)
        assert float(probe.bias[a]) == pytest.approx(ref[3], abs=1e-5)
    assert torch.all(probe.weight[3] == 0) and torch.isfinite(probe.weight).all()
    new = rng.normal(size=(7, 4))
    want = 1 / (1 + np.exp(-(((new - mean) / probe.std.numpy()) @ probe.weight.numpy() + probe.bias.numpy())))
    np.testing.assert_allclose(probe.probabilities(torch.from_numpy(new).float()).numpy(), want, rtol=1e-6)
