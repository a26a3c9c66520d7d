"""PRDC and AuthPct at scale: facefd's blocked nearest neighbours against the `prdc` package's full distance
matrices. Equal values on a set the package can hold; then facefd's peak memory and time at --num x --num.

    python bench/prdc_scale.py --num 30000 --dim 2048 --check 3000

The package's three N x N float64 matrices need 3 * 8 * N^2 bytes (21.6 GB at 30k): it is run only at
--check, and its memory at --num is printed as that formula.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=30000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--check", type=int, default=3000, help="set size for the comparison with the prdc package")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    from prdc import compute_prdc

    from facefd.metrics.kernels import authpct, prdc

    g = torch.Generator().manual_seed(0)
    real = torch.randn(args.check, 64, generator=g)
    fake = torch.randn(args.check, 64, generator=g) * 1.1 + 0.1
    ours = prdc(real, fake, k=5)
    theirs = compute_prdc(real_features=real.numpy().astype(np.float64), fake_features=fake.numpy().astype(np.float64),
                          nearest_k=5)
    equal = all(abs(ours[k] - theirs[k]) < 1e-12 for k in theirs)
    print(f"{args.check} x {args.check}: facefd {ours}\n{'':>{len(str(args.check)) * 2 + 3}}prdc package {theirs}  "
          f"equal: {equal}")

    base = peak_rss_gb()
    real = torch.randn(args.num, args.dim, generator=g).to(args.device)
    fake = (torch.randn(args.num, args.dim, generator=g) * 1.1 + 0.1).to(args.device)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    values = prdc(real, fake, k=5)
    t_prdc = time.perf_counter() - start
    start = time.perf_counter()
    auth = authpct(real, fake)
    t_auth = time.perf_counter() - start
    features_gb = 2 * args.num * args.dim * 4 / 1024 ** 3
    if args.device.startswith("cuda"):
        used = torch.cuda.max_memory_allocated() / 1024 ** 3
        where = f"peak GPU memory {used:.2f} GB"
    else:
        used = peak_rss_gb()
        where = f"peak process memory {used:.2f} GB (before the features: {base:.2f} GB)"
    package_gb = 3 * 8 * args.num ** 2 / 1024 ** 3
    print(f"{args.num} x {args.num}, {args.dim}-d on {args.device}: PRDC {t_prdc:.0f} s, AuthPct {t_auth:.0f} s; "
          f"{where}; the features themselves {features_gb:.2f} GB; the prdc package would need {package_gb:.1f} GB "
          f"for its distance matrices (ratio {package_gb / max(used, 1e-9):.0f}x)")
    print(f"values: {values}, authpct {auth:.2f}")


if __name__ == "__main__":
    main()
