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


def _kth_neighbour_radius(x: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance of each row to its k-th nearest other row, with a running top-(k+1) over blocks of
    ``chunk`` x ``chunk`` distances (memory O(N k + chunk^2), never N x N)."""
    radii = []
    for i in range(0, x.shape[0], chunk):
        best = None
        for j in range(0, x.shape[0], chunk):
            d = torch.cdist(x[i:i + chunk], x[j:j + chunk])
            best = d if best is None else torch.cat([best, d], dim=1)
            best = best.topk(min(k + 1, best.shape[1]), dim=1, largest=False).values
        radii.append(best[:, k])  # the point itself is at distance 0
    return torch.cat(radii)


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int = 5, chunk: int = 2048) -> dict[str, float]:
    """Precision, recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020).

    Computed over blocks of ``chunk`` x ``chunk`` distances on the features' device, so memory is
    O((N + M) k + chunk^2): 50k x 50k features never need the full distance matrix.

    Args:
        real: ``[N, D]`` real features.
        fake: ``[M, D]`` generated features.
        k: the neighbourhood size.
        chunk: rows per block.

    Returns:
        ``{"precision", "recall", "density", "coverage"}``.

    Example:
        >>> import torch
        >>> x = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
        >>> prdc(x, x, k=3)["coverage"]  # every real point has a generated point at distance 0
        1.0
    """
    if real.shape[0] <= k or fake.shape[0] <= k:
        raise RuntimeError(f"PRDC with k={k} needs more than {k} features in each set")
    real, fake = real.double(), fake.double()
    r_real, r_fake = _kth_neighbour_radius(real, k, chunk), _kth_neighbour_radius(fake, k, chunk)
    real_count = torch.zeros(fake.shape[0], dtype=torch.float64, device=fake.device)  # real balls holding each fake
    nearest_fake = torch.full((real.shape[0],), float("inf"), dtype=torch.float64, device=real.device)
    recalled = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    for i in range(0, real.shape[0], chunk):
        for j in range(0, fake.shape[0], chunk):
            d = torch.cdist(real[i:i + chunk], fake[j:j + chunk])
            real_count[j:j + chunk] += (d < r_real[i:i + chunk, None]).sum(dim=0)
            nearest_fake[i:i + chunk] = torch.minimum(nearest_fake[i:i + chunk], d.min(dim=1).values)
            recalled[i:i + chunk] |= (d < r_fake[None, j:j + chunk]).any(dim=1)
    return {
        "precision": float((real_count > 0).double().mean()),
        "recall": float(recalled.double().mean()),
        "density": float(real_count.mean() / k),
        "coverage": float((nearest_fake < r_real).double().mean()),
    }
