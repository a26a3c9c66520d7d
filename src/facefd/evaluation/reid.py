"""Re-identification metrics (Piano et al., Table I): queries are anonymized faces, the gallery holds
the originals, and a gallery item is relevant when it shows the query's identity."""
from __future__ import annotations

from typing import Sequence

import torch

from facefd.models.probe.knn import knn_search


def reid(queries: torch.Tensor, gallery: torch.Tensor, query_ids: Sequence[str], gallery_ids: Sequence[str],
         ks: Sequence[int] = (1, 5, 10), distance: str = "l2") -> dict[str, float]:
    """Re-ID@K (share of queries with a relevant item among their K nearest) and two mAP@K for every K.

    ``map@K``: AP@K of one query = (1 / min(R, K)) * sum over ranks i <= K of precision@i * rel(i), with R
    the number of relevant gallery items (the usual re-identification definition: a query that could
    fill its top K and found only some scores below 1).
    ``map_found@K``: the same sum divided by the relevant items *found* in the top K (torchmetrics'
    ``RetrievalMAP(top_k=K)``): 0 when none is found. Queries without any relevant item are left out
    (and counted).

    Args:
        queries: ``[Q, D]`` embeddings of the anonymized (or query) images.
        gallery: ``[G, D]`` embeddings of the originals.
        query_ids: the identity of each query.
        gallery_ids: the identity of each gallery item.
        ks: the K values.
        distance: ``l2`` or ``cosine``.

    Returns:
        ``{"reid@K": ..., "map@K": ..., "map_found@K": ..., "queries": Q, "queries_without_match": n}``.

    Raises:
        ValueError: when the id lists do not match the embeddings.

    Example:
        Both queries lie nearest to person ``a``: one of two is re-identified.

        >>> import torch
        >>> from facefd.evaluation import reid
        >>> queries, gallery = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 0.0], [10.0, 0.0]])
        >>> reid(queries, gallery, ["a", "b"], ["a", "b"], ks=[1])["reid@1"]
        0.5
    """
    if len(query_ids) != queries.shape[0] or len(gallery_ids) != gallery.shape[0]:
        raise ValueError("one identity per query row and per gallery row")
    k_max = min(max(ks), gallery.shape[0])
    _, idx = knn_search(queries, gallery, k_max, distance)
    gallery_ids = list(gallery_ids)
    counts: dict[str, int] = {}
    for g in gallery_ids:
        counts[g] = counts.get(g, 0) + 1
    out: dict[str, float] = {}
    rel = torch.tensor([[gallery_ids[j] == q for j in row] for q, row in zip(query_ids, idx.tolist())],
                       dtype=torch.float64).reshape(len(query_ids), k_max)
    relevant = torch.tensor([counts.get(q, 0) for q in query_ids], dtype=torch.float64)
    has = relevant > 0
    rel, relevant = rel[has], relevant[has]
    out["queries"] = int(has.sum())
    out["queries_without_match"] = int((~has).sum())
    ranks = torch.arange(1, k_max + 1, dtype=torch.float64)
    precision_at = rel.cumsum(1) / ranks
    for k in ks:
        kk = min(k, k_max)
        out[f"reid@{k}"] = float((rel[:, :kk].sum(1) > 0).double().mean()) if len(rel) else float("nan")
        hits = (precision_at[:, :kk] * rel[:, :kk]).sum(1)
        ap = hits / torch.minimum(relevant, torch.tensor(float(kk)))
        out[f"map@{k}"] = float(ap.mean()) if len(rel) else float("nan")
        found = rel[:, :kk].sum(1)
        ap_found = torch.where(found > 0, hits / found.clamp(min=1), torch.zeros_like(hits))
        out[f"map_found@{k}"] = float(ap_found.mean()) if len(rel) else float("nan")
    return out
