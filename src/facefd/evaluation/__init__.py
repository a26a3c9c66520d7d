"""Evaluation tasks behind ``python evaluate.py task=...``."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

from hydra.utils import instantiate
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def _require(cfg: DictConfig, *keys: str) -> None:
    missing = [k for k in keys if cfg.get(k) in (None, "")]
    if missing:
        raise ValueError(f"task={cfg.task} needs {', '.join(f'{k}=...' for k in missing)}")


def _export(cfg: DictConfig) -> str:
    from facefd.models.dino.export import export_checkpoint

    _require(cfg, "ckpt_path", "out")
    path = export_checkpoint(cfg.ckpt_path, cfg.out)
    print(path)
    return str(path)


def _loader_kwargs(cfg: DictConfig) -> dict:
    return dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers, skip_bad_images=cfg.data.skip_bad_images)


def _stats(cfg: DictConfig) -> str:
    from facefd.evaluation.folder_stats import folder_statistics

    if not cfg.data.get("root"):
        raise ValueError("task=stats needs data.root=<image folder>")
    _require(cfg, "out")
    metric = instantiate(cfg.metric)
    stats = folder_statistics(metric, cfg.data.root, max_images=cfg.get("num_samples"), **_loader_kwargs(cfg))
    path = metric.save_reference(cfg.out, metadata=stats.metadata)  # the folder's stats are its real set
    print(f"{path}: {stats.count} images, {stats.mean.shape[0]}-d features")
    return str(path)


def _fd(cfg: DictConfig) -> dict:
    from facefd.evaluation.folder_stats import distance

    _require(cfg, "a", "b")
    metric = instantiate(cfg.metric)
    result = distance(metric, cfg.a, cfg.b, max_images=cfg.get("num_samples"), **_loader_kwargs(cfg))
    print(f"FD = {result['fd']:.6g}  (n_a = {result['n_a']}, n_b = {result['n_b']})")
    if cfg.get("out"):
        out = Path(cfg.out)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(out)  # atomic
    return result


TASKS: dict[str, Callable[[DictConfig], Any]] = {"export": _export, "stats": _stats, "fd": _fd}


def run(cfg: DictConfig) -> Any:
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task={cfg.task!r}; available: {sorted(TASKS)}")
    return TASKS[cfg.task](cfg)
