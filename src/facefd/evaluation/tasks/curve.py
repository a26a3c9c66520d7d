"""``task=curve run=RUN_DIR``: FDD/FID against training steps, from a run with ``FDDCallback`` (Fig. 2)."""
from __future__ import annotations

from omegaconf import DictConfig

from facefd.evaluation.tasks.common import out_dir, plain, print_written, require


def run(cfg: DictConfig) -> dict[str, str]:
    """Plot the run's distance columns against its steps."""
    from facefd.evaluation.curve import run_curve

    require(cfg, "run")
    paths = run_curve(cfg.run, out_dir(cfg), plain(cfg.columns) if cfg.get("columns") else None)
    return print_written(paths)
