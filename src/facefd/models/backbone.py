"""Backbone construction and feature width, for any ``nn.Module`` factory (timm by default)."""
from __future__ import annotations

import functools
import importlib
from typing import Any, Callable

import torch
from torch import nn

BackboneFactory = Callable[..., nn.Module]


def feature_width(model: nn.Module, input_size: int = 64) -> int:
    """Width of the pooled features: timm's ``num_features`` when present, else one CPU forward."""
    width = getattr(model, "num_features", None)
    if isinstance(width, int) and width > 0:
        return width
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, input_size, input_size))
    model.train(was_training)
    if out.ndim != 2:
        raise ValueError(f"backbone must return [N, D] features, got shape {tuple(out.shape)}")
    return int(out.shape[1])


def factory_spec(factory: BackboneFactory) -> dict[str, Any]:
    """JSON-able description ``{"target": "module.fn", "kwargs": {...}}`` of a backbone factory."""
    kwargs: dict[str, Any] = {}
    fn = factory
    if isinstance(factory, functools.partial):
        if factory.args:
            raise ValueError("backbone factories must use keyword arguments only (got positional args)")
        fn, kwargs = factory.func, dict(factory.keywords)
    target = f"{fn.__module__}.{fn.__qualname__}"
    return {"target": target, "kwargs": plain(kwargs)}


def partial_from_spec(spec: dict[str, Any] | Callable[..., Any]) -> functools.partial:
    """Inverse of :func:`factory_spec` (a callable passes through as a partial)."""
    if callable(spec):
        return spec if isinstance(spec, functools.partial) else functools.partial(spec)
    module_name, _, attr = spec["target"].rpartition(".")
    fn = getattr(importlib.import_module(module_name), attr)
    return functools.partial(fn, **dict(spec.get("kwargs", {})))


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Build a backbone from its spec without downloading anything (``pretrained`` is forced off)."""
    factory = partial_from_spec(spec)
    if "pretrained" in factory.keywords:
        factory = functools.partial(factory.func, **{**factory.keywords, "pretrained": False})
    return factory()


def plain(value: Any) -> Any:
    """Turn OmegaConf containers and tuples into JSON-able builtins."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
