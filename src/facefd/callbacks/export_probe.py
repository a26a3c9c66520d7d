"""Write the trained probe heads as ``probe_heads.safetensors`` for :class:`facefd.AttributePredictor`."""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import lightning.pytorch as pl
import torch

log = logging.getLogger(__name__)


class ExportProbeHeads(pl.Callback):
    """On ``fit`` end (rank zero): the heads of the best checkpoint (by the checkpoint callback's
    monitor), or the final weights when there is none, to ``dirpath/filename``."""

    def __init__(self, dirpath: str, filename: str = "probe_heads.safetensors") -> None:
        self.path = Path(dirpath) / filename

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or not (hasattr(pl_module, "heads") and hasattr(pl_module, "card")):
            return
        from facefd.models.probe.predictor import save_heads

        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
        heads = pl_module.heads
        if best and Path(best).exists():  # a copy with the best weights; the module itself is left alone
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            heads = copy.deepcopy(heads).cpu()
            heads.load_state_dict({k[len("heads."):]: v for k, v in state.items() if k.startswith("heads.")})
        path = save_heads(heads, self.path, pl_module.card())
        log.info("exported probe heads (%s) to %s", Path(best).name if best else "final weights", path)
