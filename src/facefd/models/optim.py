"""Optimizer pieces of the DINO reference: LARS, parameter groups, per-parameter clipping."""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (reference ``utils.LARS``).

    1-d parameters (biases, norm weights) get neither weight decay nor the LARS scaling.
    """

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9, eta: float = 0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta))

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if p.ndim != 1:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm, update_norm = torch.norm(p), torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(
                        param_norm > 0.0, torch.where(update_norm > 0, g["eta"] * param_norm / update_norm, one), one
                    )
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])
        return loss


def regularization_groups(modules: Iterable[nn.Module]) -> list[dict]:
    """Two groups: weights (decayed, group 0) and biases/norm parameters (never decayed)."""
    regularized, not_regularized = [], []
    for module in modules:
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            (not_regularized if name.endswith(".bias") or param.ndim == 1 else regularized).append(param)
    return [{"params": regularized}, {"params": not_regularized, "weight_decay": 0.0}]


@torch.no_grad()
def clip_gradients_per_parameter(parameters: Iterable[nn.Parameter], clip: float) -> None:
    """Scale each parameter's gradient to norm <= ``clip`` on its own (reference ``clip_gradients``).

    Lightning's ``gradient_clip_val`` clips the global norm instead, which is a different update.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm(grads, 2)
    for g, n in zip(grads, norms):
        g.mul_(torch.clamp(clip / (n + 1e-6), max=1.0))
