"""Agreement of each metric with human scores (Tables 2-3 of the FDD paper): Pearson r and Spearman
rho over the sets that were both rated and benchmarked."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from scipy import stats

from facefd.evaluation.plots import scatter_panels
from facefd.utils.files import write_json

_SET_COLUMNS = ("set", "name", "dataset")
_MEAN_COLUMNS = ("mean", "score", "mean_score", "rating")


def read_ratings(path: str | Path) -> dict[str, dict[str, float]]:
    """``set,mean,std`` rows (column names are matched loosely: set/name, mean/score/rating, std)."""
    path = Path(path)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path} has no rows")
    lower = {c.lower(): c for c in rows[0]}
    set_col = next((lower[c] for c in _SET_COLUMNS if c in lower), None)
    mean_col = next((lower[c] for c in _MEAN_COLUMNS if c in lower), None)
    if set_col is None or mean_col is None:
        raise ValueError(f"{path} needs a set column ({'/'.join(_SET_COLUMNS)}) and a score column "
                         f"({'/'.join(_MEAN_COLUMNS)}); it has {list(rows[0])}")
    std_col = lower.get("std")
    out = {}
    for n, r in enumerate(rows, 2):
        try:
            out[r[set_col]] = {"mean": float(r[mean_col]), "std": float(r[std_col]) if std_col and r[std_col] else None}
        except ValueError as exc:
            raise ValueError(f"{path}:{n}: {exc}") from exc
    return out


def correlate(ratings: dict[str, dict[str, float]], benchmark: list[dict[str, Any]], value: str = "fd") -> dict:
    """Per metric: Pearson and Spearman correlation of the metric's values with the mean human scores."""
    results: dict[str, Any] = {}
    for metric in dict.fromkeys(r["metric"] for r in benchmark):
        pairs = [(r["set"], r[value], ratings[r["set"]]["mean"]) for r in benchmark
                 if r["metric"] == metric and r["set"] in ratings and r.get(value) is not None]
        if len(pairs) < 3:
            raise ValueError(f"metric {metric}: only {len(pairs)} set(s) have both a rating and a value; "
                             "correlation needs at least 3 (set names must match)")
        names, xs, ys = zip(*pairs)
        pearson, spearman = stats.pearsonr(xs, ys), stats.spearmanr(xs, ys)
        results[metric] = {"pearson_r": float(pearson.statistic), "pearson_p": float(pearson.pvalue),
                           "spearman_rho": float(spearman.statistic), "spearman_p": float(spearman.pvalue),
                           "n_sets": len(pairs), "sets": list(names), "values": list(xs), "scores": list(ys)}
    return results


def run_correlate(ratings_path: str | Path, benchmark_json: str | Path, out_dir: str | Path, value: str = "fd") -> dict:
    ratings = read_ratings(ratings_path)
    benchmark = json.loads(Path(benchmark_json).read_text())
    results = correlate(ratings, benchmark, value)
    out = Path(out_dir)
    write_json(out / "correlation.json", results)
    scatter_panels({m: (r["values"], r["scores"], r["sets"]) for m, r in results.items()}, out / "correlation.png",
                   xlabel="distance to the reference", ylabel="mean human score",
                   titles={m: f"{m}: r = {r['pearson_r']:.2f}, ρ = {r['spearman_rho']:.2f}" for m, r in results.items()})
    return results


def format_table(results: dict) -> str:
    lines = ["| metric | Pearson r | Spearman ρ | sets |", "|---|---|---|---|"]
    lines += [f"| {m} | {r['pearson_r']:.3f} | {r['spearman_rho']:.3f} | {r['n_sets']} |" for m, r in results.items()]
    return "\n".join(lines)
