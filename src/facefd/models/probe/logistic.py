"""A closed-loop linear probe for callbacks: L2-regularised logistic regression per attribute, fitted
full-batch with L-BFGS on standardised features (seconds for tens of thousands of samples)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LogisticProbe:
    weight: torch.Tensor  # [D, A] on standardised features
    bias: torch.Tensor    # [A]
    mean: torch.Tensor    # [D]
    std: torch.Tensor     # [D]

    @torch.no_grad()
    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.double() - self.mean) / self.std
        return torch.sigmoid(x @ self.weight + self.bias)


def fit_logistic_probe(features: torch.Tensor, labels: torch.Tensor, l2: float = 1e-3,
                       max_iter: int = 200) -> LogisticProbe:
    """Minimise mean BCE + ``l2`` / 2 * ||W||² (bias not penalised) for every attribute at once.

    ``features`` [N, D], ``labels`` [N, A] in {0, 1}. Float64 so the optimum is reached to tolerance.
    """
    x = features.detach().double().cpu()
    y = labels.detach().double().cpu()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-12)
    x = (x - mean) / std
    weight = torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(y.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10,
                            tolerance_change=1e-14, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ weight + bias, y, reduction="none").mean(0).sum()
        loss = loss + 0.5 * l2 * (weight**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LogisticProbe(weight.detach(), bias.detach(), mean, std)
