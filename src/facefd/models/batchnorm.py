"""BatchNorm statistics recomputed on chosen data ("precise BN", Wu & Johnson 2021).

A network's BN running statistics depend on what it last saw: a DINO teacher's come from augmented
crops, a random network's from nothing at all. Comparing features fairly means estimating both on
the same images, which is what :func:`recalibrated_batchnorm` does, restoring the old statistics after.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
from torch import nn


def batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(module: nn.Module, batches: Iterable[torch.Tensor],
                          forward: Callable[[torch.Tensor], object] | None = None) -> int:
    """Replace every BN layer's running mean/var with the average over ``batches`` (equal weight per
    batch, as PreciseBN does); return the number of batches seen. ``forward`` defaults to ``module``."""
    layers = batchnorm_layers(module)
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches below
    was_training = module.training
    module.train()
    seen = 0
    try:
        for images in batches:
            (forward or module)(images)
            seen += 1
    finally:
        module.train(was_training)
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
    return seen


@contextmanager
def recalibrated_batchnorm(module: nn.Module, batches: Iterable[torch.Tensor],
                           forward: Callable[[torch.Tensor], object] | None = None) -> Iterator[nn.Module]:
    """Within the block, ``module``'s BN statistics are those of ``batches``; afterwards the old ones return."""
    layers = batchnorm_layers(module)
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in layers]
    try:
        if layers:
            recalibrate_batchnorm(module, batches, forward)
        yield module
    finally:
        for m, (mean, var, count) in zip(layers, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
