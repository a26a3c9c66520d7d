"""Export a feature extractor from any DINO checkpoint."""
from __future__ import annotations

from pathlib import Path

import torch

from facefd.models.dino.module import DINOModule


def export_checkpoint(ckpt_path: str | Path, out: str | Path) -> Path:
    """Load a ``DINOModule`` checkpoint on the CPU and write its teacher backbone to ``out``."""
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.exists():
        raise FileNotFoundError(f"checkpoint {ckpt_path} does not exist")
    module = DINOModule.load_from_checkpoint(ckpt_path, map_location=torch.device("cpu"))
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    source = {"checkpoint": str(ckpt_path), "epoch": ckpt.get("epoch"), "global_step": ckpt.get("global_step")}
    return module.export_extractor(out, source=source)
