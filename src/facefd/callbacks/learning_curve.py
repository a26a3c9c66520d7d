"""What a self-supervised run learned, per epoch: loss and probe scores against the initial network.

Written by :class:`facefd.callbacks.KNNProbe` at the end of training as ``learning_curve.json`` and
``learning_curve.png`` beside the CSV log, plus one summary line, so the first thing a user sees is
whether the features beat the network they started from.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

from facefd.utils.files import save_figure, write_json

#: epoch number under which the initial network's scores are recorded
INITIAL_EPOCH = -1


def _finite(value: Any) -> Optional[float]:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def learning_summary(history: dict[int, dict[str, float]], method: str, score: str,
                     extra_methods: Sequence[str] = ()) -> Optional[str]:
    """One line: initial -> final probe score (and accuracy) with the majority answer, then the same score of
    each extra probe method; None without both ends."""
    scored = sorted(e for e, m in history.items() if e != INITIAL_EPOCH and m.get(score) is not None)
    if INITIAL_EPOCH not in history or not scored:
        return None
    first, last = history[INITIAL_EPOCH], history[scored[-1]]
    gain = 100 * (last[score] - first[score])
    line = (
        f"{method} attribute {score} (mean over attributes): initial network {first[score]:.3f} -> "
        f"epoch {scored[-1]} {last[score]:.3f} ({gain:+.1f} points; a constant answer scores 0.500); "
        f"accuracy {first['acc']:.3f} -> {last['acc']:.3f} (majority answer {first['majority_acc']:.3f})"
    )
    for name in extra_methods:
        key = f"{name}_{score}"
        if first.get(key) is not None and last.get(key) is not None:
            line += (f"; {name} probe {score} {first[key]:.3f} -> {last[key]:.3f} "
                     f"({100 * (last[key] - first[key]):+.1f} points)")
    return line


def write_learning_curve(history: dict[int, dict[str, float]], out_dir: str | Path, method: str,
                         score: str, extra_methods: Sequence[str] = ()) -> dict[str, Path]:
    """``learning_curve.json`` (every epoch's loss and scores) and ``learning_curve.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    epochs = sorted(history)
    rows = [{"epoch": e, **{k: _finite(v) for k, v in history[e].items()}} for e in epochs]
    initial = history.get(INITIAL_EPOCH, {})
    json_path = write_json(out_dir / "learning_curve.json", {
        "method": method, "extra_methods": list(extra_methods), "score": score, "initial_epoch": INITIAL_EPOCH,
        "majority_acc": _finite(initial.get("majority_acc")), "epochs": rows,
    })
    return {"json": json_path, "png": _plot(history, out_dir / "learning_curve.png", method, score, extra_methods)}


def _plot(history: dict[int, dict[str, float]], path: Path, method: str, score: str,
          extra_methods: Sequence[str] = ()) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = sorted(e for e in history if e != INITIAL_EPOCH)
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(11, 4))
    losses = [(e, history[e]["loss"]) for e in trained if _finite(history[e].get("loss")) is not None]
    if losses:
        ax_loss.plot(*zip(*losses), marker="o", color="tab:red")
    ax_loss.set(xlabel="epoch", ylabel="training loss (epoch mean)", title="loss")
    ax_loss.grid(alpha=0.3)

    initial = history.get(INITIAL_EPOCH, {})
    lines = [(score, f"{method} {score}", "tab:blue"), ("acc", f"{method} acc", "tab:green")]
    lines += [(f"{m}_{score}", f"{m} {score}", c) for m, c in zip(extra_methods, ("tab:purple", "tab:orange"))]
    for key, label, colour in lines:
        points = [(e, history[e][key]) for e in ([INITIAL_EPOCH] if initial else []) + trained
                  if _finite(history[e].get(key)) is not None]
        if points:
            ax_score.plot(*zip(*points), marker="o", color=colour, label=label)
        if _finite(initial.get(key)) is not None:
            ax_score.axhline(initial[key], color=colour, linestyle="--", alpha=0.7,
                             label=f"initial network {label} ({initial[key]:.3f})")
    if _finite(initial.get("majority_acc")) is not None:
        ax_score.axhline(initial["majority_acc"], color="tab:green", linestyle=":",
                         label=f"majority answer acc ({initial['majority_acc']:.3f})")
    ax_score.axhline(0.5, color="grey", linestyle=":", label=f"constant answer {score} (0.5)")
    ax_score.set(xlabel="epoch (-1: initial network)", ylabel="mean over attributes",
                 title="attribute probes on the val split")
    ax_score.legend(fontsize=7)
    ax_score.grid(alpha=0.3)
    return save_figure(fig, path)
