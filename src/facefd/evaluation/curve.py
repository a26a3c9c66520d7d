"""Fig. 2 of the FDD paper: logged FDD/FID values against training steps, from a run's CSV log."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional, Sequence

from facefd.evaluation.plots import line_plot
from facefd.utils.files import write_text

DEFAULT_PATTERNS = ("fdd", "fid", "/fd")


def find_metrics_csv(run: str | Path) -> Path:
    """A run folder's (newest) Lightning CSV log, or the file itself."""
    run = Path(run)
    if run.is_file():
        return run
    found = sorted(run.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no metrics.csv under {run}: log with logger=csv (the default) or pass the file")
    return found[-1]


def read_curves(path: str | Path, columns: Optional[Sequence[str]] = None) -> dict[str, tuple[list[int], list[float]]]:
    """``{column: (steps, values)}`` for the chosen columns (default: names containing fdd/fid/fd)."""
    path = Path(path)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path} has no rows")
    header = list(rows[0])
    if columns:
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path} has no column(s) {missing}; it has {header}")
        chosen = list(columns)
    else:
        chosen = [c for c in header if any(p in c.lower() for p in DEFAULT_PATTERNS)]
        if not chosen:
            raise ValueError(f"{path} has no FDD/FID column (looked for {DEFAULT_PATTERNS} in {header}); "
                             "name them with columns=[...]")
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for c in chosen:
        steps, values = [], []
        for r in rows:
            if r.get(c) not in (None, "") and r.get("step") not in (None, ""):
                v = float(r[c])
                if math.isfinite(v):
                    steps.append(int(float(r["step"])))
                    values.append(v)
        curves[c] = (steps, values)
    return curves


def run_curve(run: str | Path, out_dir: str | Path, columns: Optional[Sequence[str]] = None) -> dict[str, Path]:
    source = find_metrics_csv(run)
    curves = read_curves(source, columns)
    out = Path(out_dir)
    lines = ["metric,step,value"] + [f"{c},{s},{v}" for c, (st, vs) in curves.items() for s, v in zip(st, vs)]
    return {"csv": write_text(out / "curve.csv", "\n".join(lines) + "\n"),
            "png": line_plot(curves, out / "curve.png", xlabel="training step", ylabel="distance",
                             title=f"{source.parent.name}: distance during training")}
