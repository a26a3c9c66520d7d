"""Hydra/OmegaConf glue: resolvers and building lists of objects from config."""
from __future__ import annotations

import logging
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), so bf16 autocast is faster than
    fp32; elsewhere it is emulated and slower."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    except Exception:  # a torch without these probes: assume not
        return False


def resolve_precision(precision: Any, accelerator: str = "auto") -> Any:
    """``auto``: bf16-mixed on a CUDA GPU that supports it, else 32-true (fp16 overflows DINO's loss).
    ``auto-bf16``: as ``auto``, and bf16-mixed on a CPU with native bf16 too (the default DINO preset: 1.5x
    faster steps on such CPUs; DINO's loss and centre stay in float32)."""
    if str(precision) not in ("auto", "auto-bf16"):
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if on_gpu and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    if str(precision) == "auto-bf16" and not on_gpu and cpu_has_native_bf16():
        return "bf16-mixed"
    return "32-true"


def loader_workers(workers: Any, accelerator: str = "auto") -> int:
    """``auto``: no loader workers when training on the CPU (workers and the model's threads share the same
    cores: 2 workers made the default run 30 % slower on 2 cores), 2 otherwise (a GPU needs its data fed)."""
    if str(workers) != "auto":
        return int(workers)
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    return 0 if on_cpu else 2


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("facefd.precision"):
        OmegaConf.register_new_resolver("facefd.precision", resolve_precision)
    if not OmegaConf.has_resolver("facefd.workers"):
        OmegaConf.register_new_resolver("facefd.workers", loader_workers)


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
