"""Nearest neighbours of query faces in a gallery, per feature space (Fig. 3 of the FDD paper).

Features come from the on-disk cache (a 100k gallery is extracted once, in batches); the search is
:func:`facefd.models.probe.knn.knn_search`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from PIL import Image, ImageDraw

from facefd.data.images import load_rgb
from facefd.models.probe.knn import DISTANCES, knn_search  # noqa: F401  (re-exported)
from facefd.utils.files import atomic_path, write_json

@dataclass
class NeighborResult:
    space: str
    distances: torch.Tensor  # [Q, k]
    indices: torch.Tensor    # [Q, k]


def neighbors_json(queries: Sequence[Path], gallery: Sequence[Path], results: Sequence[NeighborResult],
                   distance: str) -> list[dict[str, Any]]:
    out = []
    for qi, q in enumerate(queries):
        out.append({"query": str(q), "distance": distance, "neighbors": {
            r.space: [{"path": str(gallery[int(j)]), "distance": float(d)}
                      for j, d in zip(r.indices[qi], r.distances[qi])] for r in results}})
    return out


def grid_size(num_rows: int, k: int, num_spaces: int, thumb: int, gap: int = 8, header: int = 18) -> tuple[int, int]:
    """Width and height of :func:`neighbor_grid`'s image."""
    width = thumb + num_spaces * (gap + k * thumb)
    return width, header + num_rows * (thumb + 14)


def neighbor_grid(queries: Sequence[Path], gallery: Sequence[Path], results: Sequence[NeighborResult], path: str | Path,
                  thumb: int = 96, max_rows: Optional[int] = 16, gap: int = 8, header: int = 18) -> Path:
    """One row per query: the query, then a labelled block of its k neighbours per feature space."""
    rows = list(range(len(queries)))[:max_rows]
    k = results[0].indices.shape[1]
    width, height = grid_size(len(rows), k, len(results), thumb, gap, header)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), "query", fill="black")
    for s, r in enumerate(results):
        draw.text((thumb + s * (gap + k * thumb) + gap + 4, 3), f"{r.space} (k={k})", fill="black")
    cache: dict[str, Image.Image] = {}

    def tile(p: Path) -> Image.Image:
        key = str(p)
        if key not in cache:
            cache[key] = load_rgb(p).resize((thumb, thumb), Image.BILINEAR)
        return cache[key]

    for row, qi in enumerate(rows):
        y = header + row * (thumb + 14)
        canvas.paste(tile(queries[qi]), (0, y))
        for s, r in enumerate(results):
            x0 = thumb + s * (gap + k * thumb) + gap
            for j in range(k):
                canvas.paste(tile(gallery[int(r.indices[qi, j])]), (x0 + j * thumb, y))
                draw.text((x0 + j * thumb + 2, y + thumb), f"{float(r.distances[qi, j]):.3f}", fill="black")
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)


def write_neighbors(queries: Sequence[Path], gallery: Sequence[Path], results: Sequence[NeighborResult],
                    out_dir: str | Path, distance: str, thumb: int = 96, max_rows: Optional[int] = 16) -> dict[str, Path]:
    out = Path(out_dir)
    return {"json": write_json(out / "neighbors.json", neighbors_json(queries, gallery, results, distance)),
            "png": neighbor_grid(queries, gallery, results, out / "neighbors.png", thumb, max_rows)}
