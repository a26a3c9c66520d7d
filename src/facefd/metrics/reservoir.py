"""A fixed-size uniform sample of a feature stream, mergeable across processes.

Each item gets a random key in [0, 1); the reservoir keeps the ``size`` items with the smallest
keys. That is a uniform sample without replacement of everything seen, and the union of several
reservoirs reduced to its ``size`` smallest keys is again one, so DDP merging is exact.
Empty slots hold key +inf.
"""
from __future__ import annotations

import torch


def empty_reservoir(size: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(size, dim, dtype=torch.float32), torch.full((size,), float("inf"), dtype=torch.float64)


@torch.no_grad()
def reservoir_add(rows: torch.Tensor, keys: torch.Tensor, new_rows: torch.Tensor, new_keys: torch.Tensor) -> None:
    """In place: keep the ``len(keys)`` smallest keys among the reservoir and the new items."""
    size = keys.shape[0]
    keep = torch.topk(torch.cat([keys, new_keys.to(keys)]), size, largest=False).indices
    incoming = keep[keep >= size] - size
    kept_slots = torch.zeros(size, dtype=torch.bool, device=keys.device)
    kept_slots[keep[keep < size]] = True
    evicted = torch.nonzero(~kept_slots).flatten()
    rows[evicted] = new_rows[incoming].to(rows)
    keys[evicted] = new_keys.to(keys)[incoming]


def reservoir_merge(rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Valid rows of one reservoir, or of gathered ``[world, size, dim]`` ones merged to ``size`` rows."""
    if rows.ndim == 3:
        size = rows.shape[1]
        rows, keys = rows.reshape(-1, rows.shape[-1]), keys.reshape(-1)
        order = torch.topk(keys, min(size, keys.shape[0]), largest=False).indices
        rows, keys = rows[order], keys[order]
    return rows[torch.isfinite(keys)]
