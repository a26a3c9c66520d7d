"""``task=export ckpt_path=CKPT out=DIR``: a DINO checkpoint -> feature extractor (.safetensors + card)."""
from __future__ import annotations

from omegaconf import DictConfig

from facefd.evaluation.tasks.common import require
from facefd.utils.checks import check_writable


def run(cfg: DictConfig) -> str:
    """Export the checkpoint's teacher backbone and print the card's path."""
    from facefd.models.dino.export import export_checkpoint

    require(cfg, "ckpt_path", "out")
    check_writable(cfg.out, is_file=False)  # before the checkpoint loads
    path = export_checkpoint(cfg.ckpt_path, cfg.out)
    print(path)
    return str(path)
