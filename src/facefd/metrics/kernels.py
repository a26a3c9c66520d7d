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


def authpct(real: torch.Tensor, fake: torch.Tensor, chunk: int = 2048) -> float:
    """Authenticity (Alaa et al. 2022, as dgm-eval computes it): the percentage of generated samples
    whose nearest real sample is closer to its own nearest other real sample than to them.

    A generated sample that sits closer to a training image than that image's nearest neighbour in the
    training set looks copied; 100 means no sample does. Nearest neighbours are found over blocks of
    ``chunk`` x ``chunk`` distances: memory O(N + M + chunk^2).

    Args:
        real: ``[N, D]`` features of the training (reference) set.
        fake: ``[M, D]`` features of the generated set.
        chunk: rows per block.

    Returns:
        The percentage, in [0, 100].

    Example:
        >>> import torch
        >>> real = torch.tensor([[0.0], [1.0], [10.0]])
        >>> authpct(real, torch.tensor([[0.1], [5.0]]))  # 0.1 copies 0.0 (its neighbour is 1.0 away)
        50.0
    """
    if real.shape[0] < 2:
        raise RuntimeError("authenticity needs at least 2 real features")
    real, fake = real.double(), fake.double()
    real_gap = _kth_neighbour_radius(real, 1, chunk)  # each real sample's distance to its nearest other
    authentic = torch.zeros(fake.shape[0], dtype=torch.bool, device=fake.device)
    for j in range(0, fake.shape[0], chunk):
        best = torch.full((min(chunk, fake.shape[0] - j),), float("inf"), dtype=torch.float64, device=fake.device)
        which = torch.zeros_like(best, dtype=torch.long)
        for i in range(0, real.shape[0], chunk):
            d, idx = torch.cdist(real[i:i + chunk], fake[j:j + chunk]).min(dim=0)
            closer = d < best
            best, which = torch.where(closer, d, best), torch.where(closer, idx + i, which)
        authentic[j:j + chunk] = real_gap[which] < best
    return float(100.0 * authentic.double().mean())


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = 2020, shuffle: bool = True) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016) with torch-fidelity's protocol: the samples shuffled with
    ``numpy.random.RandomState(seed)``, cut into ``splits`` parts, ``exp(E[KL(p(y|x) || p(y))])`` per
    part; the mean and (population) standard deviation over the parts.

    Args:
        logits: ``[N, C]`` classifier logits (the FID Inception's 1008 ``logits_unbiased``).
        splits: number of parts.
        seed: the shuffle's seed (torch-fidelity's default 2020).
        shuffle: shuffle before splitting (torch-fidelity's ``samples_shuffle``).

    Returns:
        ``(mean, std)``.

    Example:
        >>> import torch
        >>> inception_score(torch.zeros(20, 5), splits=2)  # every prediction uniform: no information
        (1.0, 0.0)
    """
    import numpy as np

    n = logits.shape[0]
    if n < splits:
        raise RuntimeError(f"the Inception Score with {splits} splits needs at least {splits} samples, got {n}")
    x = logits.double()
    if shuffle:
        x = x[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    p, log_p = x.softmax(dim=1), x.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        part, log_part = p[i * n // splits:(i + 1) * n // splits], log_p[i * n // splits:(i + 1) * n // splits]
        log_marginal = part.mean(dim=0, keepdim=True).log()
        scores.append(float((part * (log_part - log_marginal)).sum(dim=1).mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))


def identity_leak(reference: torch.Tensor, generated: torch.Tensor, threshold: float = 0.6,
                  pairs: int = 8, chunk: int = 2048) -> dict:
    """The share of generated faces whose identity embedding lies within ``threshold`` (Euclidean) of some
    reference face: the same person by the embedder's own rule (dlib: 0.6), i.e. a memorised identity.

    Rows that are NaN (no face found) are left out of both sets and counted.

    Args:
        reference: ``[N, D]`` identity embeddings of the reference (training) set.
        generated: ``[M, D]`` embeddings of the generated set.
        threshold: the same-person distance.
        pairs: how many of the closest (generated, reference) pairs to return.
        chunk: rows per block of distances.

    Returns:
        ``{"value", "leaked", "faces", "no_face_generated", "no_face_reference", "threshold", "closest"}``
        with ``closest`` a list of ``(generated index, reference index, distance)``, nearest first.

    Example:
        >>> ref = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
        >>> identity_leak(ref, torch.tensor([[0.1, 0.0], [2.0, 2.0], [float("nan")] * 2]))["value"]
        0.5
    """
    ref_ok, gen_ok = ~reference.isnan().any(dim=1), ~generated.isnan().any(dim=1)
    ref_rows, gen_rows = ref_ok.nonzero().flatten(), gen_ok.nonzero().flatten()
    if len(ref_rows) == 0 or len(gen_rows) == 0:
        raise RuntimeError("identity_leak needs faces in both sets: "
                           f"{len(ref_rows)} reference and {len(gen_rows)} generated images have one")
    ref, gen = reference[ref_rows].double(), generated[gen_rows].double()
    best = torch.empty(len(gen), dtype=torch.float64)
    which = torch.empty(len(gen), dtype=torch.long)
    for j in range(0, len(gen), chunk):
        d = torch.cdist(gen[j:j + chunk], ref)
        best[j:j + chunk], which[j:j + chunk] = d.min(dim=1)
    order = best.argsort()[:pairs]
    leaked = int((best < threshold).sum())
    return {"value": leaked / len(gen), "leaked": leaked, "faces": len(gen),
            "no_face_generated": int((~gen_ok).sum()), "no_face_reference": int((~ref_ok).sum()),
            "threshold": threshold,
            "closest": [(int(gen_rows[i]), int(ref_rows[which[i]]), float(best[i])) for i in order]}
