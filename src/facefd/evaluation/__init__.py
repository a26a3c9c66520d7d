"""Evaluation tasks behind ``python evaluate.py task=...``."""
from __future__ import annotations

import logging
from typing import Any, Callable

from omegaconf import DictConfig

log = logging.getLogger(__name__)


def _export(cfg: DictConfig) -> str:
    from facefd.models.dino.export import export_checkpoint

    if not cfg.get("ckpt_path") or not cfg.get("out"):
        raise ValueError("task=export needs ckpt_path=<DINO checkpoint> and out=<folder or .safetensors path>")
    path = export_checkpoint(cfg.ckpt_path, cfg.out)
    log.info("exported %s", path)
    print(path)
    return str(path)


TASKS: dict[str, Callable[[DictConfig], Any]] = {"export": _export}


def run(cfg: DictConfig) -> Any:
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task={cfg.task!r}; available: {sorted(TASKS)}")
    return TASKS[cfg.task](cfg)
