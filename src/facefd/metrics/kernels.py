"""Sample-based generative metrics on features: KID (Bińkowski et al.) and PRDC (Naeem et al.)."""
from __future__ import annotations

import torch


def polynomial_mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef: float = 1.0) -> torch.Tensor:
    """Unbiased MMD² with k(a, b) = (a·b / d + coef)^degree (the KID kernel)."""
    d = x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + coef) ** degree for a, b in ((x, x), (y, y), (x, y)))
    m, n = x.shape[0], y.shape[0]
    sum_xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    sum_yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return sum_xx + sum_yy - 2 * kxy.mean()


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> tuple[float, float]:
    """Mean and std of the unbiased MMD² over random subsets (without replacement) of both sets."""
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size < 2:
        raise RuntimeError("KID needs at least 2 features in each set")
    values = []
    for _ in range(subsets):
        ri = torch.randperm(real.shape[0], generator=generator)[:size]
        fi = torch.randperm(fake.shape[0], generator=generator)[:size]
        values.append(polynomial_mmd2_unbiased(real[ri.to(real.device)].double(), fake[fi.to(fake.device)].double()))
    v = torch.stack(values)
    return float(v.mean()), float(v.std(unbiased=True)) if subsets > 1 else 0.0


def _kth_neighbour_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # the point itself is at distance 0


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> dict[str, float]:
    """Precision, recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020)."""
    if real.shape[0] <= k or fake.shape[0] <= k:
        raise RuntimeError(f"PRDC with k={k} needs more than {k} features in each set")
    real, fake = real.double(), fake.double()
    r_real, r_fake = _kth_neighbour_radius(real, k), _kth_neighbour_radius(fake, k)
    d = torch.cdist(real, fake)  # [n_real, n_fake]
    inside_real = d < r_real[:, None]
    return {
        "precision": float(inside_real.any(dim=0).double().mean()),
        "recall": float((d < r_fake[None, :]).any(dim=1).double().mean()),
        "density": float(inside_real.double().sum(dim=0).mean() / k),
        "coverage": float((d.min(dim=1).values < r_real).double().mean()),
    }
