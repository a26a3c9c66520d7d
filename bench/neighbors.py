"""Nearest-neighbour search of task=neighbors: facefd's batched top-k against peers, in one run.

Gallery of N x D random features (default 100k x 2048, the issue's size), Q queries, k neighbours,
L2 or cosine. Peers: a naive loop (one numpy distance computation and argpartition per query) and
scikit-learn's ``NearestNeighbors(algorithm="brute")`` (``pip install -e ".[bench]"``). Prints
queries/second and the ratio facefd / peer, and checks that all return the same neighbours.

    python bench/neighbors.py [--gallery 100000] [--dim 2048] [--queries 256] [--k 5] [--distance l2]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from facefd.models.probe.knn import knn_search
from timing import timed  # noqa: E402  (bench/timing.py)


def naive(queries: np.ndarray, gallery: np.ndarray, k: int, distance: str) -> np.ndarray:
    out = []
    if distance == "cosine":
        gallery = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    for q in queries:
        if distance == "cosine":
            d = 1 - gallery @ (q / np.linalg.norm(q))
        else:
            d = ((gallery - q) ** 2).sum(1)
        top = np.argpartition(d, k)[:k]
        out.append(top[np.argsort(d[top])])
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gallery", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--naive-queries", type=int, default=32, help="the naive loop is timed on this many queries")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--distance", choices=["l2", "cosine"], default="l2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((args.gallery, args.dim), dtype=np.float32)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    g_t, q_t = torch.from_numpy(gallery).to(args.device), torch.from_numpy(queries).to(args.device)

    def ours():
        d, i = knn_search(q_t, g_t, args.k, args.distance)
        if g_t.is_cuda:
            torch.cuda.synchronize()
        return i.cpu().numpy()

    ours()  # warm-up
    t_ours, idx_ours = timed(ours, args.repeats)
    result = {"gallery": args.gallery, "dim": args.dim, "queries": args.queries, "k": args.k, "distance": args.distance,
              "device": args.device, "facefd_queries_per_s": args.queries / t_ours}

    nq = min(args.naive_queries, args.queries)
    t_naive, idx_naive = timed(lambda: naive(queries[:nq], gallery, args.k, args.distance), 1)
    result["naive_queries_per_s"] = nq / t_naive
    result["ratio_vs_naive"] = result["facefd_queries_per_s"] / result["naive_queries_per_s"]
    result["same_as_naive"] = float((idx_naive == idx_ours[:nq]).mean())

    try:
        from sklearn.neighbors import NearestNeighbors
    except ImportError:
        result["sklearn"] = 'not installed: pip install -e ".[bench]"'
    else:
        metric = "euclidean" if args.distance == "l2" else "cosine"

        def sk():
            nn = NearestNeighbors(n_neighbors=args.k, algorithm="brute", metric=metric).fit(gallery)
            return nn.kneighbors(queries, return_distance=False)

        t_sk, idx_sk = timed(sk, args.repeats)
        result["sklearn_queries_per_s"] = args.queries / t_sk
        result["ratio_vs_sklearn"] = result["facefd_queries_per_s"] / result["sklearn_queries_per_s"]
        result["same_as_sklearn"] = float((idx_sk == idx_ours).mean())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
