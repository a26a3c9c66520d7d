"""The Fréchet distance between two Gaussians, exact and fast, through symmetric eigenproblems.

    FD = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

With any factor R of S1 (S1 = R R^T: Cholesky, or V sqrt(W) from ``eigh`` when S1 is singular),
R^T S2 R is symmetric PSD and has the eigenvalues of S1 S2, so tr((S1 S2)^(1/2)) is the sum of the
square roots of ``eigvalsh(R^T S2 R)`` (clamped at 0). No ``scipy.linalg.sqrtm`` (slow, unstable across
versions) and no non-symmetric ``eigvals`` (complex/negative eigenvalues when N < d).
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_float64(x: ArrayLike, device: Optional[torch.device] = None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return t.to(device=device if device is not None else t.device, dtype=torch.float64)


def psd_factor(sigma: torch.Tensor) -> torch.Tensor:
    """R with sigma = R R^T: Cholesky when sigma is positive definite, else V sqrt(max(W, 0))."""
    chol, info = torch.linalg.cholesky_ex(sigma)
    if int(info) == 0:
        return chol
    w, v = torch.linalg.eigh(sigma)
    return v * w.clamp_min(0).sqrt()


def _matmul_lower(b: torch.Tensor, lower: torch.Tensor, min_block: int = 256) -> torch.Tensor:
    """``b @ lower`` for a lower-triangular ``lower``, skipping its zero blocks (recursively halved):
    about 30 % fewer flops than a dense product at d=2048, same rounding behaviour."""
    n = lower.shape[0]
    if n <= min_block:
        return b @ lower
    h = n // 2
    out = torch.empty(b.shape[0], n, dtype=b.dtype, device=b.device)
    out[:, :h] = _matmul_lower(b[:, :h], lower[:h, :h], min_block)
    out[:, :h] += b[:, h:] @ lower[h:, :h]
    out[:, h:] = _matmul_lower(b[:, h:], lower[h:, h:], min_block)
    return out


def trace_sqrt_product(sigma2: torch.Tensor, factor1: torch.Tensor) -> torch.Tensor:
    """tr((S1 S2)^(1/2)) given a factor of S1."""
    if torch.equal(factor1, factor1.tril()):  # Cholesky factor: exploit the zeros
        m = _matmul_lower((_matmul_lower(sigma2, factor1)).T, factor1)  # (S2 L)^T L = L^T S2 L
    else:
        m = factor1.T @ sigma2 @ factor1
    m = (m + m.T) / 2  # exact symmetry for eigvalsh
    return torch.linalg.eigvalsh(m).clamp_min(0).sqrt().sum()


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike,
                     factor1: Optional[torch.Tensor] = None) -> float:
    """Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2), in float64 on the inputs' device:
    ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``.

    Args:
        mu1: mean of the first Gaussian, ``[D]`` (numpy array or tensor).
        sigma1: its covariance, ``[D, D]``.
        mu2: mean of the second Gaussian.
        sigma2: its covariance.
        factor1: :func:`psd_factor` of ``sigma1``, to skip its factorisation for a fixed reference.

    Returns:
        The distance as a Python float.

    Example:
        >>> import numpy as np
        >>> from facefd import frechet_distance
        >>> frechet_distance(np.zeros(2), np.eye(2), np.ones(2), np.eye(2))  # |mu1 - mu2|^2 = 2
        2.0
        >>> round(frechet_distance(np.zeros(1), np.eye(1), np.zeros(1), 4 * np.eye(1)), 9)  # 1 + 4 - 2 * 2
        1.0

    ``factor1`` (from :func:`psd_factor` of ``sigma1``) skips the factorisation when the first
    Gaussian is a fixed reference. Noise-level negative results of identical inputs are clamped to 0.
    """
    device = mu1.device if isinstance(mu1, torch.Tensor) else None
    mu1, mu2 = _as_float64(mu1, device).flatten(), _as_float64(mu2, device).flatten()
    sigma1, sigma2 = _as_float64(sigma1, device), _as_float64(sigma2, device)
    d = mu1.shape[0]
    if mu2.shape[0] != d or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"shape mismatch: mu1 {tuple(mu1.shape)}, sigma1 {tuple(sigma1.shape)}, "
                         f"mu2 {tuple(mu2.shape)}, sigma2 {tuple(sigma2.shape)}")
    for name, t in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or inf")
    if factor1 is None:
        factor1 = psd_factor(sigma1)
    diff = mu1 - mu2
    fd = diff.dot(diff) + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt_product(sigma2, factor1.to(sigma2))
    return max(float(fd), 0.0)
