"""Evaluation tasks behind ``python evaluate.py task=...``."""
from __future__ import annotations

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
        from facefd.utils.files import write_json

        write_json(cfg.out, result)
    return result


def _plain(value: Any) -> Any:
    from facefd.models.backbone import plain

    return plain(value)


def _probe_table(cfg: DictConfig) -> dict:
    from functools import partial

    from facefd.data.datamodule import FaceImageDataModule
    from facefd.evaluation.probe_table import run_probe_table, write_probe_table

    if not cfg.data.get("root"):
        raise ValueError("task=probe_table needs data.root=<labelled image folder>")
    p = cfg.probe
    images = partial(FaceImageDataModule, root=cfg.data.root, attributes=_plain(cfg.attributes),
                     attributes_file=cfg.data.attributes_file, partition_file=cfg.data.partition_file,
                     val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction, seed=cfg.seed,
                     skip_bad_images=cfg.data.skip_bad_images, num_workers=cfg.num_workers)
    optimizer = {"target": "torch.optim.AdamW", "kwargs": {"lr": p.lr, "weight_decay": p.weight_decay}}
    results = run_probe_table(
        images, _plain(cfg.extractors), list(cfg.heads), p.cache_dir, Path(cfg.paths.output_dir) / "heads",
        max_epochs=p.max_epochs, extra_test_root=cfg.get("extra_test_root"), extra_test_name=cfg.extra_test_name,
        module_kwargs=dict(hidden_dim=p.hidden_dim, depth=p.depth, pos_weight=p.pos_weight, optimizer=optimizer),
        feature_kwargs=dict(batch_size=p.batch_size, extract_batch_size=cfg.batch_size, extract_num_workers=cfg.num_workers),
    )
    paths = write_probe_table(results, cfg.out or cfg.paths.output_dir, cfg.extra_test_name)
    print(paths["md"].read_text())
    return {k: str(v) for k, v in paths.items()}


TASKS: dict[str, Callable[[DictConfig], Any]] = {"export": _export, "stats": _stats, "fd": _fd,
                                                 "probe_table": _probe_table}


def run(cfg: DictConfig) -> Any:
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task={cfg.task!r}; available: {sorted(TASKS)}")
    return TASKS[cfg.task](cfg)
