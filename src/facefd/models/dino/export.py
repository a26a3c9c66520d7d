"""Export a feature extractor from any DINO checkpoint."""
from __future__ import annotations

from pathlib import Path
from contextlib import nullcontext
from typing import Optional

import torch

from facefd.models.backbone import trusting_code
from facefd.models.dino.module import DINOModule


def export_checkpoint(ckpt_path: str | Path, out: str | Path, trust_code: Optional[bool] = None) -> Path:
    """Load a ``DINOModule`` checkpoint on the CPU (tensors and plain data only) and write its teacher
    backbone to ``out``; ``trust_code`` lets its stored backbone name code outside the allow-list."""
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.exists():
        raise FileNotFoundError(f"checkpoint {ckpt_path} does not exist")
    with trusting_code(bool(trust_code)) if trust_code is not None else nullcontext():
        module = DINOModule.load_from_checkpoint(ckpt_path, map_location=torch.device("cpu"), weights_only=True)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    source = {"checkpoint": str(ckpt_path), "epoch": ckpt.get("epoch"), "global_step": ckpt.get("global_step")}
    return module.export_extractor(out, source=source)
