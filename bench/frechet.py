"""Fréchet distance: facefd against its peers, measured in one run.

1. The formula on 2048-d statistics of 10k samples: ``facefd.metrics.frechet_distance`` (fresh, and
   with the reference factor cached as in the callback) vs the scipy-``sqrtm`` formula of
   pytorch-fid/clean-fid and torchmetrics' ``eigvals`` formula; all must agree to 1e-9 relative.
2. ``FrechetDistance.update`` throughput vs torchmetrics' ``FrechetInceptionDistance.update`` with
   the same extractor and images.
3. Metric state size after 10k and 100k images (must not grow).

    python bench/frechet.py [--dim 2048] [--samples 10000]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scipy.linalg
import timm
import torch

from facefd import FrechetDistance, frechet_distance
from facefd.metrics import psd_factor
from facefd.models.extractor import FeatureExtractor
from timing import timed  # noqa: E402  (bench/timing.py)


def scipy_sqrtm_fd(mu1, s1, mu2, s2) -> float:
    covmean = np.real(scipy.linalg.sqrtm(s1 @ s2))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def formula_bench(dim: int, samples: int, device: str = "cpu") -> dict:
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    x1 = np.maximum(rng.normal(size=(samples, dim)) @ mix, 0)  # ReLU-like pooled features
    x2 = np.maximum(rng.normal(size=(samples, dim)) @ mix + 0.05, 0)
    mu1, mu2 = x1.mean(0), x2.mean(0)
    s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    t1, t2 = (torch.from_numpy(a).to(device) for a in (s1, s2))
    m1, m2 = torch.from_numpy(mu1).to(device), torch.from_numpy(mu2).to(device)
    float((t1 @ t2).sum())  # CUDA context and kernels warm before timing

    from torchmetrics.image.fid import _compute_fid

    t_ours, v_ours = timed(lambda: frechet_distance(m1, t1, m2, t2), 3)
    factor = psd_factor(t1)
    t_cached, v_cached = timed(lambda: frechet_distance(m1, t1, m2, t2, factor1=factor), 3)
    t_scipy, v_scipy = timed(lambda: scipy_sqrtm_fd(mu1, s1, mu2, s2), 1)
    t_tm, v_tm = timed(lambda: float(_compute_fid(m1, t1, m2, t2)), 3)
    rel = {k: abs(v - v_scipy) / abs(v_scipy) for k, v in
           {"facefd": v_ours, "facefd_cached": v_cached, "torchmetrics": v_tm}.items()}
    return {"dim": dim, "samples": samples, "device": device, "seconds": {"facefd": t_ours, "facefd_cached_reference": t_cached,
            "scipy_sqrtm": t_scipy, "torchmetrics_eigvals": t_tm},
            "values": {"facefd": v_ours, "scipy_sqrtm": v_scipy, "torchmetrics_eigvals": v_tm},
            "relative_difference_to_scipy": rel,
            "speedup_vs_scipy": t_scipy / t_ours, "speedup_cached_vs_torchmetrics": t_tm / t_cached,
            "speedup_vs_torchmetrics": t_tm / t_ours}


def update_bench(batches: int, batch: int, device: str = "cpu", cheap: bool = False) -> dict:
    """``cheap``: a one-layer 2048-d extractor on 16 px images, so the metric's own accumulation
    dominates; otherwise a resnet18 on 64 px images (the extractor dominates)."""
    torch.manual_seed(0)
    if cheap:
        size, width = 16, 2048
        backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * size * size, width))
    else:
        size, width = 64, 512
        backbone = timm.create_model("resnet18", pretrained=False, num_classes=0)
    extractor = FeatureExtractor(backbone, width, size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).to(device)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    from torchmetrics.image.fid import FrechetInceptionDistance

    def run(metric):
        metric = metric.to(device)
        metric.update(images, real=True)  # warm-up
        t0 = time.perf_counter()
        for _ in range(batches):
            metric.update(images, real=True)
        float(next(iter(metric.metric_state.values())).sum())  # wait for the device
        return batches * batch / (time.perf_counter() - t0)

    ours, theirs = [], []
    for _ in range(3):  # alternate, keep the best of each
        ours.append(run(FrechetDistance(extractor)))
        theirs.append(run(FrechetInceptionDistance(feature=extractor, input_img_size=(3, size, size))))
    return {"facefd_img_per_s": max(ours), "torchmetrics_img_per_s": max(theirs), "ratio": max(ours) / max(theirs)}


def state_bytes(metric: FrechetDistance) -> int:
    return sum(getattr(metric, name).numel() * getattr(metric, name).element_size() for name in metric._defaults)


def memory_bench(dim: int) -> dict:
    sizes = {}
    for n in (10_000, 100_000):
        m = FrechetDistance(FeatureExtractor(torch.nn.Identity(), dim, 8, (0, 0, 0), (1, 1, 1)), num_features=dim)
        feats = torch.randn(5_000, dim, dtype=torch.float64)
        for _ in range(n // 5_000):
            m.update_features(feats, real=True)
        sizes[n] = state_bytes(m)
    return {"state_bytes_10k": sizes[10_000], "state_bytes_100k": sizes[100_000],
            "growth": sizes[100_000] / sizes[10_000]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--update-batches", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    f = formula_bench(args.dim, args.samples, args.device)
    s = f["seconds"]
    print(f"formula d={args.dim}, N={args.samples}, device {args.device} (scipy always on the CPU):")
    print(f"  facefd {s['facefd']:.3f}s | cached reference {s['facefd_cached_reference']:.3f}s | "
          f"scipy sqrtm {s['scipy_sqrtm']:.3f}s | torchmetrics eigvals {s['torchmetrics_eigvals']:.3f}s")
    print(f"  speed-up vs scipy sqrtm: {f['speedup_vs_scipy']:.1f}x (target >= 15); cached vs torchmetrics: "
          f"{f['speedup_cached_vs_torchmetrics']:.1f}x (target >= 3); uncached vs torchmetrics: "
          f"{f['speedup_vs_torchmetrics']:.1f}x")
    print("  relative difference to scipy: " + ", ".join(f"{k} {v:.1e}" for k, v in f["relative_difference_to_scipy"].items()))
    u = update_bench(args.update_batches, args.batch, args.device)
    print(f"update throughput (resnet18 extractor, 64 px, batch {args.batch}): facefd {u['facefd_img_per_s']:.1f} img/s, "
          f"torchmetrics {u['torchmetrics_img_per_s']:.1f} img/s, ratio {u['ratio']:.3f} (target >= 1.0)")
    c = update_bench(args.update_batches * 10, args.batch, args.device, cheap=True)
    print(f"update throughput (one-layer 2048-d extractor, batch {args.batch}: accumulation dominates): facefd "
          f"{c['facefd_img_per_s']:.1f} img/s, torchmetrics {c['torchmetrics_img_per_s']:.1f} img/s, ratio {c['ratio']:.3f}")
    m = memory_bench(args.dim)
    print(f"metric state: {m['state_bytes_10k'] / 2**20:.1f} MiB after 10k images, "
          f"{m['state_bytes_100k'] / 2**20:.1f} MiB after 100k (growth {m['growth']:.2f}x)")
    print(json.dumps({"formula": f, "update": u, "update_cheap_extractor": c, "memory": m}))


if __name__ == "__main__":
    main()
