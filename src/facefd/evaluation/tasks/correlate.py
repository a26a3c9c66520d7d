"""``task=correlate ratings=ratings.csv benchmark=benchmark.json``: agreement with human scores (Tables 2-3)."""
from __future__ import annotations

from omegaconf import DictConfig

from facefd.evaluation.tasks.common import out_dir, require


def run(cfg: DictConfig) -> dict:
    """Pearson and Spearman correlation of each metric with the ratings."""
    from facefd.evaluation.correlate import format_table, run_correlate

    require(cfg, "ratings", "benchmark")
    results = run_correlate(cfg.ratings, cfg.benchmark, out_dir(cfg), cfg.correlate_value)
    print(format_table(results))
    return results
