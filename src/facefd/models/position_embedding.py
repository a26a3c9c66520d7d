"""Learned ViT position embeddings resampled to another grid, as DINO and DINOv2 do at run time."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: DINO's and DINOv2's ``interpolate_offset``.
INTERPOLATE_OFFSET = 0.1


def resample_position_embedding(pos_embed: torch.Tensor, grid: int, offset: float = INTERPOLATE_OFFSET,
                              prefix_tokens: int = 1) -> torch.Tensor:
    """DINO's and DINOv2's runtime resampling of learned position embeddings to a ``grid`` x ``grid`` input
    (their ``interpolate_pos_encoding``): bicubic, no antialiasing, by the scale factor ``(grid + offset) / M``
    (M x M: the trained grid).

    Args:
        pos_embed: ``[1, prefix + M*M, D]``.
        grid: the input's patches per side (16 for 224 px and patch 14).
        offset: DINO's and DINOv2's ``interpolate_offset`` (0.1).
        prefix_tokens: class (and register) tokens before the patch embeddings.

    Returns:
        ``[1, prefix + grid*grid, D]``.

    Example:
        >>> resample_position_embedding(torch.zeros(1, 1 + 37 * 37, 8), 16).shape
        torch.Size([1, 257, 8])
    """
    prefix, patches = pos_embed[:, :prefix_tokens], pos_embed[:, prefix_tokens:].float()
    m = int(math.isqrt(patches.shape[1]))
    if m * m != patches.shape[1]:
        raise ValueError(f"{patches.shape[1]} patch position embeddings do not form a square grid")
    if m == grid:
        return pos_embed
    dim = patches.shape[-1]
    scale = (grid + offset) / m
    resized = F.interpolate(patches.reshape(1, m, m, dim).permute(0, 3, 1, 2), scale_factor=(scale, scale),
                            mode="bicubic", antialias=False)
    if resized.shape[-2:] != (grid, grid):
        raise ValueError(f"resampling {m}x{m} position embeddings gave {tuple(resized.shape[-2:])}, not {grid}x{grid}")
    return torch.cat([prefix.float(), resized.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)], dim=1).to(pos_embed.dtype)
