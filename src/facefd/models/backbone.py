"""Backbone construction and feature width, for any ``nn.Module`` factory (timm by default).

Specs ``{"target": ..., "kwargs": ...}`` stored in extractor cards and checkpoints may come from a
stranger, so turning one back into a callable goes through an allow-list (timm's registry of model
names, torch's optimizers, facefd's own builders); any other import path needs ``trust_code=True``
from the person running the command, and is refused before anything is imported.
"""
from __future__ import annotations

import functools
import importlib
from typing import Any, Callable, Optional

import torch
from torch import nn

from facefd.utils.errors import UntrustedCodeError, UserError  # noqa: F401  (UntrustedCodeError re-exported)
from facefd.utils.settings import code_trusted, trusting_code  # noqa: F401  (trusting_code re-exported)

BackboneFactory = Callable[..., nn.Module]


def feature_width(model: nn.Module, input_size: int = 64) -> int:
    """Width of the pooled features the model returns: timm's ``head_hidden_size`` where the model has a
    pre-logits head (MobileNetV3: 1024, not ``num_features`` = 576), else ``num_features``, else one
    CPU forward."""
    for attr in ("head_hidden_size", "num_features"):
        width = getattr(model, attr, None)
        if isinstance(width, int) and width > 0:
            return width
    return forward_width(model, input_size)


def forward_width(model: nn.Module, input_size: int) -> int:
    """The width of ``model``'s output on a dummy batch (eval mode, no gradients): the ground truth."""
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad():
        out = model(torch.zeros(2, 3, input_size, input_size, device=device))
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


#: Names under which timm's factory is stored (``factory_spec`` writes the defining module's path).
TIMM_FACTORIES = frozenset({"timm.create_model", "timm.models.create_model", "timm.models._factory.create_model"})
#: facefd's own builders, by the name a spec stores.
FACEFD_BUILDERS = frozenset({"facefd.models.optim.LARS", "facefd.metrics.extractors.create_random_timm_model"})
#: timm keyword arguments that read files or the network (``checkpoint_path`` goes through ``torch.load``).
#: facefd's start keys (``weights`` ...) read a file or the hub too: honoured from the runner's config only.
TIMM_FILE_KWARGS = frozenset({"checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir",
                              "weights", "weights_revision", "weights_key", "restore"})


def _is_torch_optimizer(target: str) -> bool:
    module_name, _, attr = target.rpartition(".")
    if not (module_name == "torch.optim" or module_name.startswith("torch.optim.")):
        return False
    cls = getattr(torch.optim, attr, None)  # only names torch.optim itself exports
    return isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) and (
        module_name == "torch.optim" or cls.__module__ == module_name)


def check_trusted(spec: dict[str, Any], trust_code: Optional[bool] = None, source: str = "a stored spec") -> None:
    """Raise :class:`UntrustedCodeError` unless ``spec`` only names allow-listed code, or the caller trusts
    it (``trust_code=True``, or ``None`` inside :func:`trusting_code`)."""
    if trust_code if trust_code is not None else code_trusted():
        return
    target, kwargs = spec.get("target"), dict(spec.get("kwargs") or {})
    hint = ("only timm models (by registered name), torch.optim optimizers and facefd's own builders are "
            "built from files; if you trust the file's author, opt in with trust_code=true "
            "(Python: trust_code=True)")
    if not isinstance(target, str) or not target:
        raise UntrustedCodeError(f"{source}: missing or invalid target {target!r}")
    if target in TIMM_FACTORIES or target == "facefd.metrics.extractors.create_random_timm_model":
        import timm

        name = kwargs.get("model_name")
        if not isinstance(name, str) or not timm.is_model(name):
            raise UntrustedCodeError(f"{source}: model_name {name!r} is not a timm model registered in this "
                                     f"install (hub ids and local-dir: configs are not built from files); {hint}")
        bad = sorted(TIMM_FILE_KWARGS & kwargs.keys())
        if bad:
            raise UntrustedCodeError(f"{source}: target {target} with {bad} would read another file; {hint}")
        return
    if target in FACEFD_BUILDERS or _is_torch_optimizer(target):
        return
    raise UntrustedCodeError(f"{source}: target {target!r} is not on the allow-list; {hint}")


def partial_from_spec(spec: dict[str, Any] | Callable[..., Any], trust_code: Optional[bool] = None,
                      source: str = "a stored spec") -> functools.partial:
    """Inverse of :func:`factory_spec` (a callable passes through as a partial: it is the caller's own
    code). A spec dict is checked with :func:`check_trusted` before its module is imported."""
    if callable(spec):
        return spec if isinstance(spec, functools.partial) else functools.partial(spec)
    check_trusted(spec, trust_code, source)
    module_name, _, attr = spec["target"].rpartition(".")
    fn = getattr(importlib.import_module(module_name), attr)
    return functools.partial(fn, **dict(spec.get("kwargs", {})))


def build_from_spec(spec: dict[str, Any], trust_code: Optional[bool] = None, source: str = "a stored spec") -> nn.Module:
    """Build a backbone from its spec without downloading anything (``pretrained`` is forced off)."""
    factory = partial_from_spec(spec, trust_code, source)
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
