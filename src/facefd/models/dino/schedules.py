"""Per-iteration schedules of the DINO reference (``utils.cosine_scheduler``)."""
from __future__ import annotations

import numpy as np


def cosine_schedule(
    base_value: float,
    final_value: float,
    epochs: int,
    niter_per_ep: int,
    warmup_epochs: float = 0,
    start_warmup_value: float = 0.0,
) -> np.ndarray:
    """Linear warm-up from ``start_warmup_value`` then half-cosine from ``base_value`` to ``final_value``.

    One value per iteration, ``epochs * niter_per_ep`` in all.
    """
    total = epochs * niter_per_ep
    warmup_iters = min(int(round(warmup_epochs * niter_per_ep)), total)  # fractional epochs allowed
    warmup = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(total - warmup_iters)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / max(len(iters), 1)))
    schedule = np.concatenate((warmup, cosine))
    assert len(schedule) == total
    return schedule
