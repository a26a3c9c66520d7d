"""Export the trained teacher backbone as a feature extractor when training ends."""
from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl

log = logging.getLogger(__name__)


class ExportExtractor(pl.Callback):
    """On ``fit`` end (rank zero only), write ``dirpath/extractor.safetensors`` + ``extractor.json``."""

    def __init__(self, dirpath: str, filename: str = "extractor.safetensors") -> None:
        self.path = Path(dirpath) / filename

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        if not hasattr(pl_module, "export_extractor"):
            raise TypeError(f"{type(pl_module).__name__} has no export_extractor(); remove the ExportExtractor callback")
        path = pl_module.export_extractor(
            self.path, source={"epoch": trainer.current_epoch, "global_step": trainer.global_step}
        )
        log.info("exported feature extractor to %s", path)
