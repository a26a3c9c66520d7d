"""Exact k-nearest-neighbour search (a batched matrix product with a running top-k over gallery chunks,
or faiss), and on it the training-free k-NN probe of DINO's ``eval_knn.py``: cosine similarity,
k neighbours weighted by exp(similarity / T), here per binary attribute (CelebA-style multi-label)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


DISTANCES = ("cosine", "l2")


@torch.no_grad()
def knn_search(queries: torch.Tensor, gallery: torch.Tensor, k: int, distance: str = "cosine",
               query_chunk: int = 1024, gallery_chunk: int = 65536, backend: str = "torch") -> tuple[torch.Tensor, torch.Tensor]:
    """``(distances [Q, k], indices [Q, k])`` of the k nearest gallery rows, nearest first.

    cosine: 1 - cos(q, g); l2: Euclidean distance. ``backend="faiss"`` uses an exact faiss index.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"query and gallery widths differ: {queries.shape[1]} vs {gallery.shape[1]}")
    k = min(k, gallery.shape[0])
    if queries.shape[0] == 0 or k == 0:
        return torch.zeros(queries.shape[0], k), torch.zeros(queries.shape[0], k, dtype=torch.long)
    if backend == "faiss":
        return _faiss_search(queries, gallery, k, distance)
    q_all = queries.float()
    g_all = gallery.float()
    if distance == "cosine":
        q_all, g_all = F.normalize(q_all, dim=1), F.normalize(g_all, dim=1)
    g_sq = (g_all * g_all).sum(1)
    out_d, out_i = [], []
    for qs in range(0, q_all.shape[0], query_chunk):
        q = q_all[qs:qs + query_chunk]
        best_s = torch.full((q.shape[0], 0), float("-inf"), device=q.device)
        best_i = torch.zeros((q.shape[0], 0), dtype=torch.long, device=q.device)
        for gs in range(0, g_all.shape[0], gallery_chunk):
            g = g_all[gs:gs + gallery_chunk]
            dots = q @ g.T
            # a score to maximise: cosine similarity, or -(squared distance) without the query's own norm
            score = dots if distance == "cosine" else 2 * dots - g_sq[gs:gs + gallery_chunk]
            s, i = score.topk(min(k, score.shape[1]), dim=1)
            best_s, order = torch.cat([best_s, s], 1).topk(min(k, best_s.shape[1] + s.shape[1]), dim=1)
            best_i = torch.cat([best_i, i + gs], 1).gather(1, order)
        if distance == "cosine":
            dist = 1 - best_s
        else:
            dist = ((q * q).sum(1, keepdim=True) - best_s).clamp_min(0).sqrt()
        out_d.append(dist)
        out_i.append(best_i)
    return torch.cat(out_d), torch.cat(out_i)


def _faiss_search(queries: torch.Tensor, gallery: torch.Tensor, k: int, distance: str):
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("neighbors.backend=faiss needs faiss: pip install faiss-cpu (or faiss-gpu)") from exc
    q = queries.float().cpu().contiguous().numpy()
    g = gallery.float().cpu().contiguous().numpy()
    if distance == "cosine":
        faiss.normalize_L2(q)
        faiss.normalize_L2(g)
        index = faiss.IndexFlatIP(g.shape[1])
    else:
        index = faiss.IndexFlatL2(g.shape[1])
    index.add(g)
    d, i = index.search(q, k)
    d = torch.from_numpy(d)
    return (1 - d if distance == "cosine" else d.clamp_min(0).sqrt()), torch.from_numpy(i).long()


@torch.no_grad()
def knn_attribute_probabilities(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
                                k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """P(attribute = 1) for every query: the exp(sim / T)-weighted vote of its k nearest bank features.

    ``bank`` [N, D], ``bank_labels`` [N, A] in {0, 1}, ``queries`` [Q, D] -> [Q, A].
    """
    if bank.shape[0] != bank_labels.shape[0]:
        raise ValueError(f"{bank.shape[0]} bank features but {bank_labels.shape[0]} label rows")
    dist, idx = knn_search(queries, bank, k, "cosine", query_chunk=chunk)
    weights = ((1 - dist) / temperature).exp()  # cosine distance back to similarity
    votes = (weights.unsqueeze(-1) * bank_labels.float()[idx]).sum(1)  # [Q, A]
    return votes / weights.sum(1, keepdim=True)


def knn_attribute_accuracy(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
                           query_labels: torch.Tensor, k: int = 20, temperature: float = 0.07) -> torch.Tensor:
    """Per-attribute accuracy [A] of the k-NN vote (probability > 0.5 means attribute present)."""
    probs = knn_attribute_probabilities(bank, bank_labels, queries, k, temperature)
    return ((probs > 0.5).float() == query_labels.float()).float().mean(0)


def attribute_scores(probabilities: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-attribute ``acc`` (threshold 0.5), ``bacc`` (balanced accuracy: mean of the true-positive
    and true-negative rates) and ``auroc`` (rank-based, threshold-free), each ``[A]``.

    Balanced accuracy and AUROC are 0.5 for any constant answer, so, unlike plain accuracy, they do not
    reward a probe for repeating the majority answer of a rare attribute. An attribute with only one
    class among the queries gets NaN for ``bacc``'s missing rate and for ``auroc``.
    """
    from torchmetrics.functional.classification import binary_auroc

    probs, y = probabilities.float(), labels.float()
    pred = (probs > 0.5).float()
    pos, neg = y.sum(0), (1 - y).sum(0)
    tpr = (pred * y).sum(0) / pos
    tnr = ((1 - pred) * (1 - y)).sum(0) / neg
    auroc = torch.stack([
        binary_auroc(probs[:, j], y[:, j].long()) if 0 < pos[j] < y.shape[0] else torch.tensor(float("nan"))
        for j in range(y.shape[1])
    ])
    return {"acc": (pred == y).float().mean(0), "bacc": (tpr + tnr) / 2, "auroc": auroc.float()}


def majority_accuracy(bank_labels: torch.Tensor, query_labels: torch.Tensor) -> torch.Tensor:
    """Per-attribute accuracy ``[A]`` of always answering the bank's majority value."""
    majority = (bank_labels.float().mean(0) > 0.5).float()
    return (query_labels.float() == majority).float().mean(0)
