"""Training entry (``python train.py``): build everything from the Hydra config and fit."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from facefd.utils.hydra import instantiate_list

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> Optional[float]:
    """Fit ``cfg.model`` on ``cfg.data``; return ``cfg.optimized_metric`` for sweepers (None if not logged)."""
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    datamodule: pl.LightningDataModule = instantiate(cfg.data)
    model: pl.LightningModule = instantiate(cfg.model)
    callbacks = instantiate_list(cfg.get("callbacks"))
    loggers = instantiate_list(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    config = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    for lg in loggers:
        lg.log_hyperparams(config)  # the whole run config, not just the module's arguments

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    finally:
        _write_bad_image_report(datamodule, output_dir)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    log.info("final metrics: %s", metrics)
    return _optimized_metric(cfg, metrics)


def _write_bad_image_report(datamodule: Any, output_dir: Path) -> None:
    bad = getattr(datamodule, "bad_images", None)
    if bad:
        report = output_dir / "bad_images.txt"
        report.write_text("".join(f"{p}\t{r}\n" for p, r in bad))
        log.warning("%d unreadable images were skipped; list in %s", len(bad), report)


def _optimized_metric(cfg: DictConfig, metrics: dict[str, float]) -> Optional[float]:
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} was not logged; logged metrics: {sorted(metrics)}")
    value = metrics[name]
    return value if math.isfinite(value) else None
