"""Hydra/OmegaConf glue: resolvers and building lists of objects from config."""
from __future__ import annotations

import logging
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def resolve_precision(precision: Any, accelerator: str = "auto") -> Any:
    """``auto``: bf16-mixed on a CUDA GPU that supports it, else 32-true (fp16 overflows DINO's loss)."""
    if str(precision) != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if on_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("facefd.precision"):
        OmegaConf.register_new_resolver("facefd.precision", resolve_precision)


def instantiate_list(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a dict config (callbacks, loggers); skip ``null`` entries."""
    objects: list[Any] = []
    if not cfg:
        return objects
    for name, item in cfg.items():
        if isinstance(item, DictConfig) and "_target_" in item:
            log.info("instantiating %s <%s>", name, item._target_)
            objects.append(instantiate(item))
    return objects


register_resolvers()
