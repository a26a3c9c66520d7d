"""Write the trained probe heads as ``probe_heads.safetensors`` for :class:`facefd.AttributePredictor`."""
from __future__ import annotations

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
        if not trainer.is_global_zero or not hasattr(pl_module, "export_heads"):
            return
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
        final_state = None
        if best and Path(best).exists():
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            final_state = {k: v.clone() for k, v in pl_module.heads.state_dict().items()}
            pl_module.heads.load_state_dict({k[len("heads."):]: v for k, v in state.items() if k.startswith("heads.")})
        try:
            path = pl_module.export_heads(self.path)
        finally:
            if final_state is not None:
                pl_module.heads.load_state_dict(final_state)
        log.info("exported probe heads (%s) to %s", Path(best).name if best else "final weights", path)
