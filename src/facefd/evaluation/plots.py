"""Figures of the evaluation tasks (matplotlib, Agg backend, written atomically as PNG)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from facefd.utils.files import save_figure  # noqa: E402


def grouped_bars(groups: Sequence[str], series: dict[str, Sequence[float]], path: str | Path, ylabel: str,
                 title: str = "", errors: Optional[dict[str, Sequence[tuple[float, float]]]] = None) -> Path:
    """One group of bars per entry of ``groups``, one bar per series (Fig. 1 of the FDD paper)."""
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) * max(len(series), 1) * 0.6 + 2), 4.0))
    for i, (name, values) in enumerate(series.items()):
        yerr = None
        if errors and name in errors:
            lo_hi = np.array(errors[name], dtype=float)
            vals = np.asarray(values, dtype=float)
            yerr = np.abs(np.stack([vals - lo_hi[:, 0], lo_hi[:, 1] - vals]))
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name, yerr=yerr, capsize=2)
    ax.set_xticks(x, groups, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def scatter_panels(panels: dict[str, tuple[Sequence[float], Sequence[float], Sequence[str]]], path: str | Path,
                   xlabel: str, ylabel: str, titles: Optional[dict[str, str]] = None) -> Path:
    """One scatter plot per panel: (x values, y values, point labels)."""
    n = max(len(panels), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), squeeze=False)
    for ax, (name, (xs, ys, labels)) in zip(axes[0], panels.items()):
        ax.scatter(xs, ys)
        for x, y, label in zip(xs, ys, labels):
            ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel if ax is axes[0][0] else "")
        ax.set_title((titles or {}).get(name, name), fontsize=9)
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, xlabel: str,
              ylabel: str, title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def identity_pairs_grid(pairs: Sequence[tuple[Path, Path, float]], threshold: float, path: str | Path) -> Path:
    """The closest (generated, reference) identity pairs side by side, one row each, with their distance;
    rows under ``threshold`` (the same person) titled in red.

    Args:
        pairs: ``(generated image, reference image, distance)``, nearest first.
        threshold: the same-person distance.
        path: the PNG to write.

    Returns:
        ``path``.
    """
    from PIL import Image

    fig, axes = plt.subplots(len(pairs), 2, figsize=(4.2, 2.1 * len(pairs)), squeeze=False)
    for row, (generated, reference, distance) in enumerate(pairs):
        for col, (image_path, label) in enumerate(((generated, "generated"), (reference, "reference"))):
            ax = axes[row, col]
            with Image.open(image_path) as im:
                im = im.convert("RGB")
                im.thumbnail((256, 256))
                ax.imshow(np.asarray(im))
            ax.set_axis_off()
            ax.set_title(f"{label}: {Path(image_path).name[:24]}", fontsize=7)
        leak = distance < threshold
        axes[row, 0].text(0, -0.25, f"distance {distance:.3f}" + (" < threshold: same person" if leak else ""),
                          transform=axes[row, 0].transAxes, fontsize=7, color="red" if leak else "black")
    fig.suptitle(f"closest identities (same person below {threshold})", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
