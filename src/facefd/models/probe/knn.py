"""Training-free k-NN probe of DINO's ``eval_knn.py``: cosine similarity, k neighbours weighted by
exp(similarity / T), here per binary attribute (CelebA-style multi-label)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_attribute_probabilities(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
                                k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """P(attribute = 1) for every query: the exp(sim / T)-weighted vote of its k nearest bank features.

    ``bank`` [N, D], ``bank_labels`` [N, A] in {0, 1}, ``queries`` [Q, D] -> [Q, A]. Search is a batched
    matrix product over query chunks (no Python loop over images).
    """
    if bank.shape[0] != bank_labels.shape[0]:
        raise ValueError(f"{bank.shape[0]} bank features but {bank_labels.shape[0]} label rows")
    k = min(k, bank.shape[0])
    bank_n = F.normalize(bank.float(), dim=1)
    labels = bank_labels.float()
    out = []
    for start in range(0, queries.shape[0], chunk):
        q = F.normalize(queries[start:start + chunk].float(), dim=1)
        sims, idx = (q @ bank_n.T).topk(k, dim=1)  # [c, k]
        weights = (sims / temperature).exp()
        votes = (weights.unsqueeze(-1) * labels[idx]).sum(1)  # [c, A]
        out.append(votes / weights.sum(1, keepdim=True))
    return torch.cat(out)


def knn_attribute_accuracy(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
                           query_labels: torch.Tensor, k: int = 20, temperature: float = 0.07) -> torch.Tensor:
    """Per-attribute accuracy [A] of the k-NN vote (probability > 0.5 means attribute present)."""
    probs = knn_attribute_probabilities(bank, bank_labels, queries, k, temperature)
    return ((probs > 0.5).float() == query_labels.float()).float().mean(0)
