"""Probe heads on frozen features: one binary logit per attribute plus a softmax block per category.

``head="linear"`` is DINO's ``eval_linear.py`` classifier (one linear layer, weights ~ N(0, 0.01),
zero bias); ``head="mlp"`` adds ``depth`` hidden layers of ``hidden_dim`` units. With
``standardize=True`` features are first standardised with the training set's mean and std (kept in
the head, so it travels with the checkpoint); this is an affine map a linear layer could absorb, and
it makes the optimiser's step size independent of the extractor's feature scale.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

HEAD_FORMAT = "facefd-probe-heads"
HEAD_FORMAT_VERSION = 1


class ProbeHeads(nn.Module):
    def __init__(self, num_features: int, attribute_names: Sequence[str] = (),
                 categories: Optional[dict[str, Sequence[str]]] = None, head: str = "linear",
                 hidden_dim: int = 512, depth: int = 1, dropout: float = 0.0, standardize: bool = True) -> None:
        super().__init__()
        if head not in ("linear", "mlp"):
            raise ValueError(f"head must be 'linear' or 'mlp', got {head!r}")
        self.attribute_names = list(attribute_names)
        self.categories = {k: list(v) for k, v in (categories or {}).items()}
        if not self.attribute_names and not self.categories:
            raise ValueError("a probe needs at least one binary attribute or category to predict")
        self.config = dict(num_features=int(num_features), head=head, hidden_dim=int(hidden_dim), depth=int(depth),
                           dropout=float(dropout), standardize=bool(standardize))
        self.standardize = standardize
        self.register_buffer("feature_mean", torch.zeros(num_features))
        self.register_buffer("feature_std", torch.ones(num_features))
        out_dim = len(self.attribute_names) + sum(len(v) for v in self.categories.values())
        layers: list[nn.Module] = []
        width = num_features
        if head == "mlp":
            for _ in range(depth):
                layers += [nn.Linear(width, hidden_dim), nn.ReLU(inplace=True), nn.Dropout(dropout)]
                width = hidden_dim
        last = nn.Linear(width, out_dim)
        if head == "linear":  # eval_linear.py's LinearClassifier init
            nn.init.normal_(last.weight, mean=0.0, std=0.01)
            nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    @torch.no_grad()
    def set_feature_statistics(self, features: torch.Tensor) -> None:
        if self.standardize:
            self.feature_mean.copy_(features.mean(0))
            self.feature_std.copy_(features.std(0).clamp_min(1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (features - self.feature_mean) / self.feature_std if self.standardize else features
        return self.net(x)

    def split(self, logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``[N, out]`` -> binary logits ``[N, A]`` and ``{category: [N, K]}`` logits."""
        a = len(self.attribute_names)
        blocks, start = {}, a
        for name, classes in self.categories.items():
            blocks[name] = logits[:, start:start + len(classes)]
            start += len(classes)
        return logits[:, :a], blocks

    def card(self, **extra: Any) -> dict[str, Any]:
        return {"format": HEAD_FORMAT, "format_version": HEAD_FORMAT_VERSION, **self.config,
                "attribute_names": self.attribute_names, "categories": self.categories, **extra}

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> "ProbeHeads":
        keys = ("num_features", "head", "hidden_dim", "depth", "dropout", "standardize")
        return cls(attribute_names=card["attribute_names"], categories=card.get("categories") or {},
                   **{k: card[k] for k in keys})
