"""Nearest neighbours of query faces in a gallery, per feature space (Fig. 3 of the FDD paper).

Features come from the on-disk cache (a 100k gallery is extracted once, in batches); the search is
a batched matrix product with a running top-k over gallery chunks (or faiss when installed and
asked for), so memory stays at one [queries x chunk] block.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from facefd.data.images import load_rgb
from facefd.utils.files import atomic_path, write_json

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
