"""Training entry (``python train.py``): build everything from the Hydra config and fit."""
from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from facefd.models.checkpoints import refused
from facefd.utils.hydra import instantiate_list
from facefd.utils.checks import check_writable
from facefd.utils.entry import entry_point
from facefd.utils.files import write_text

log = logging.getLogger(__name__)


@entry_point
def run(cfg: DictConfig) -> Optional[float]:
    """Fit ``cfg.model`` on ``cfg.data``; return ``cfg.optimized_metric`` for sweepers (None if not logged)."""
    check_writable(cfg.paths.output_dir, is_file=False)  # before any data or model loads
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    datamodule: pl.LightningDataModule = instantiate(cfg.data)
    if cfg.get("features"):  # frozen-feature training (model=probe): wrap the image data module
        datamodule = instantiate(cfg.features, images=datamodule)
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
        # a checkpoint (local or by URL) is data: weights_only=True whatever the installed torch's default
        try:
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        except pickle.UnpicklingError as exc:
            raise refused(cfg.get("ckpt_path"), exc) from None
        metrics = _fit_metrics(trainer)
        if cfg.get("test_after_fit"):
            trainer.test(model=model, datamodule=datamodule, ckpt_path=_best_or_none(trainer), weights_only=True)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    finally:
        _write_bad_image_report(datamodule, output_dir)
    log.info("final metrics: %s", metrics)
    if getattr(model, "collapse_warning", None):
        log.warning("the run ended collapsed: %s", model.collapse_warning)
    return _optimized_metric(cfg, metrics)


def _fit_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The last logged values, with the monitored metric's best value where a checkpoint kept it."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    callback = trainer.checkpoint_callback
    monitor = getattr(callback, "monitor", None)
    if monitor and getattr(callback, "best_model_score", None) is not None:
        metrics[monitor] = float(callback.best_model_score)
    return metrics


def _best_or_none(trainer: pl.Trainer) -> Optional[str]:
    """The monitored best checkpoint when there is one, else the final weights (None)."""
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") if callback is not None else ""
    return "best" if best and getattr(callback, "monitor", None) else None


def _write_bad_image_report(datamodule: Any, output_dir: Path) -> None:
    bad = getattr(datamodule, "bad_images", None)
    if bad:
        report = output_dir / "bad_images.txt"
        write_text(report, "".join(f"{p}\t{r}\n" for p, r in bad))  # any bytes in a name: written as they are
        what = ("were skipped (data.skip_bad_images=true)" if getattr(datamodule, "skip_bad_images", False)
                else "stopped the run (set data.skip_bad_images=true to skip them)")
        log.warning("%d unreadable images %s; list in %s", len(bad), what, report)


def _optimized_metric(cfg: DictConfig, metrics: dict[str, float]) -> Optional[float]:
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} was not logged; logged metrics: {sorted(metrics)}")
    value = metrics[name]
    return value if math.isfinite(value) else None
