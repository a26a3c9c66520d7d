"""Start a backbone from released weights: timm hub ids, timm-layout files, the reference DINO checkpoints
(``dino_resnet50_pretrain.pth`` in torchvision's ResNet layout, the ViT checkpoints, a ``main_dino.py``
training checkpoint with ``student`` / ``teacher`` entries), and facefd's own extractors and checkpoints.

Every file is read as data: ``.safetensors``, or ``torch.load(weights_only=True)`` — which refuses the
``argparse.Namespace`` a ``main_dino.py`` checkpoint holds, so this loader, and no other, allows exactly
that class. A hub id is fetched through timm's own loader and cache, and only when the person running
facefd names it (``backbone.weights=`` on the command line or in their config); a stored spec that names
weights is refused like any file-reading spec.

Example:
    >>> import timm
    >>> net = timm.create_model("resnet18", num_classes=0)
    >>> start = read_start("dino_resnet50_pretrain.pth")  # doctest: +SKIP
    >>> apply_start(net, start).keys()  # doctest: +SKIP
    dict_keys(['source', 'sha256', 'layout', ...])
"""
from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from facefd.models.position_embedding import resample_position_embedding
from facefd.utils.errors import UserError
from facefd.utils.files import file_sha256

#: Backbone config keys that choose the start (taken out before the backbone factory is called).
START_KEYS = ("weights", "weights_revision", "weights_key", "restore")
#: What a start restores: the backbone alone, or also the DINO head and centre of a training checkpoint.
RESTORE_CHOICES = ("backbone", "all")
#: Key prefixes of classifier heads that a backbone leaves out on purpose (not an error when unmatched).
CLASSIFIER_PREFIXES = ("fc.", "head.", "heads.", "classifier.", "head_dist.", "last_linear.")
#: Wrappers around a state dict in common checkpoint files.
WRAPPER_KEYS = ("state_dict", "model", "module", "net")


class StartWeightsError(UserError, ValueError):
    """A start file or hub id that cannot be read, or whose keys do not fit the backbone."""


@dataclass
class StartWeights:
    """Weights to start from, split into what they are for.

    Args:
        backbone: the backbone's tensors, keys as the backbone names them.
        head: a DINO head's tensors (``mlp.*``, ``last_layer.*``), when the source has one.
        center: DINO's centre, when the source has one.
        record: source, sha256, layout and choices, for the run's card.
    """

    backbone: dict[str, torch.Tensor]
    head: Optional[dict[str, torch.Tensor]] = None
    center: Optional[torch.Tensor] = None
    record: dict[str, Any] = field(default_factory=dict)


def split_start_options(keywords: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(backbone factory keywords, start options)`` from a backbone config's keywords.

    Example:
        >>> split_start_options({"model_name": "resnet18", "weights": "r.pth", "num_classes": 0})
        ({'model_name': 'resnet18', 'num_classes': 0}, {'weights': 'r.pth'})
        >>> split_start_options({"model_name": "resnet18", "weights": None, "restore": "backbone"})[1]  # no start
        {}
    """
    start = {k: keywords[k] for k in START_KEYS if keywords.get(k) is not None}
    return {k: v for k, v in keywords.items() if k not in START_KEYS}, (start if "weights" in start else {})


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` allowing ``argparse.Namespace`` (a ``main_dino.py`` checkpoint's
    ``args``) and nothing else beyond torch's own allow-list."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - one line naming the file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = ("it holds Python objects other than tensors and argparse.Namespace, which are not loaded "
                      f"(only data is read from files): {reason[:200]}")
        raise StartWeightsError(f"{path}: cannot be read as weights: {reason}") from None


def _state_sha256(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                      if state[name].numel() else b"")
    return digest.hexdigest()


def _strip(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _tensors(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _without_module(state: dict[str, Any]) -> dict[str, Any]:
    """DDP's ``module.`` prefix removed (the reference saves its DDP-wrapped student with it)."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def split_layout(obj: Any, key: str = "teacher") -> tuple[str, dict[str, torch.Tensor], Optional[dict], Optional[torch.Tensor]]:
    """``(layout, backbone tensors, head tensors, centre)`` of a loaded checkpoint object.

    Layouts: ``main_dino`` (``student``/``teacher`` entries; ``key`` chooses), ``facefd_checkpoint`` (a
    Lightning checkpoint of facefd's DINOModule: the teacher, or the student with ``key="student"``),
    and ``state_dict`` (a plain or wrapped state dict: torchvision / timm / the reference ViTs, or a
    facefd extractor's tensors).

    Raises:
        StartWeightsError: ``key`` is neither ``teacher`` nor ``student``, or the object holds no tensors.
    """
    if key not in ("teacher", "student"):
        raise StartWeightsError(f"backbone.weights_key={key!r}: choose teacher (the default) or student")
    if isinstance(obj, dict) and isinstance(obj.get("teacher"), dict) and isinstance(obj.get("student"), dict):
        net = _without_module(obj[key])
        center = None
        loss = obj.get("dino_loss")
        if isinstance(loss, dict) and isinstance(loss.get("center"), torch.Tensor):
            center = loss["center"]
        return "main_dino", _tensors(_strip(net, "backbone.")), _tensors(_strip(net, "head.")) or None, center
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and any(
            k.startswith("teacher.backbone.") for k in obj["state_dict"]):
        state = obj["state_dict"]
        center = state.get("criterion.center")
        return ("facefd_checkpoint", _tensors(_strip(state, f"{key}.backbone.")),
                _tensors(_strip(state, f"{key}.head.")) or None, center)
    state = obj
    for _ in range(3):  # unwrap {"state_dict": {...}}, {"model": {...}} ...
        if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
            inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
            if inner is None:
                break
            state = inner
    if not isinstance(state, dict) or not _tensors(state):
        raise StartWeightsError("no tensors found: not a state dict, a main_dino.py checkpoint or a facefd checkpoint")
    state = _without_module(_tensors(state))
    if state and all(k.startswith("backbone.") for k in state):
        state = _strip(state, "backbone.")
    return "state_dict", state, None, None


def _hub_state(source: str, revision: Optional[str]) -> tuple[dict[str, torch.Tensor], str, Optional[str]]:
    """``(state, description, file sha256)`` of ``timm:NAME`` / ``hf-hub:REPO`` through timm's loader and
    cache; offline, the cache's file read directly."""
    import timm

    from facefd.utils.weights import cached_hub_file, is_offline

    name = source.split(":", 1)[1]
    if "@" in name:
        name, revision = name.split("@", 1)
    if source.startswith("hf-hub:"):
        repo = name
        model = f"hf-hub:{name}"
    else:
        if not timm.is_model(name.split(".")[0]) and not timm.is_model(name):
            raise StartWeightsError(f"backbone.weights={source}: {name!r} is not a timm model name")
        cfg = timm.models.get_pretrained_cfg(name)
        repo = (getattr(cfg, "hf_hub_id", None) or "") if cfg is not None else ""
        model = name
    description = f"{source}" + (f" @ {revision}" if revision else "")
    if is_offline():
        if not repo:
            raise StartWeightsError(f"backbone.weights={source}: offline (FACEFD_OFFLINE / HF_HUB_OFFLINE) and "
                                    "this timm model has no Hugging Face copy: give a local file")
        path = Path(cached_hub_file(repo, "model.safetensors", f"weights of {source}", revision=revision))
        from safetensors.torch import load_file

        return load_file(str(path)), f"{description} (Hugging Face cache {path})", file_sha256(path)
    overlay = {"hf_hub_id": f"{repo}@{revision}" if revision else repo} if repo else {}
    try:
        net = timm.create_model(model, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay or None)
    except Exception as exc:  # noqa: BLE001 - one line naming the source
        raise StartWeightsError(f"backbone.weights={source}: timm could not fetch it "
                                f"({type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''})") from None
    return net.state_dict(), f"{description} (timm hub)", None


def read_start(source: str | Path, revision: Optional[str] = None, key: str = "teacher") -> StartWeights:
    """Read the weights a run starts from.

    Args:
        source: a file (``.safetensors``, ``.pth``, ``.pt``, ``.ckpt``), or a hub id: ``timm:NAME`` (a timm
            pretrained tag, e.g. ``timm:vit_small_patch16_224.dino``) or ``hf-hub:ORG/REPO`` (``@REVISION``
            may follow either).
        revision: a hub commit hash pinning what the hub serves.
        key: of a training checkpoint: ``teacher`` (the default, the reference's evaluation network) or
            ``student``.

    Returns:
        The weights, and their record (source, sha256, layout, key).

    Raises:
        StartWeightsError: a missing or unreadable file, an unknown hub id, an offline hub id not cached.

    Example:
        >>> start = read_start("dino_deitsmall16_pretrain.pth")  # doctest: +SKIP
        >>> start.record["layout"]  # doctest: +SKIP
        'state_dict'
    """
    text = str(source)
    if text.startswith(("timm:", "hf-hub:")):
        state, description, sha = _hub_state(text, revision)
        backbone = _without_module(state)
        return StartWeights(backbone, record={"source": description, "sha256": sha or _state_sha256(backbone),
                                              "sha256_of": "file" if sha else "tensors", "layout": "timm",
                                              "revision": revision})
    path = Path(text).expanduser()
    if not path.is_file():
        raise StartWeightsError(f"backbone.weights={text}: no such file (or give a hub id: timm:NAME, hf-hub:ORG/REPO)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path))
        except Exception as exc:  # noqa: BLE001
            raise StartWeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    else:
        obj = _torch_load(path)
    try:
        layout, backbone, head, center = split_layout(obj, key)
    except StartWeightsError as exc:
        raise StartWeightsError(f"{path}: {exc}") from None
    record = {"source": str(path.resolve()), "sha256": file_sha256(path), "sha256_of": "file", "layout": layout}
    if layout in ("main_dino", "facefd_checkpoint"):
        record["key"] = key
    if layout == "main_dino" and isinstance(obj.get("args"), argparse.Namespace):
        args = vars(obj["args"])
        record["reference_args"] = {k: args[k] for k in ("arch", "patch_size", "out_dim", "epochs") if k in args}
    return StartWeights(backbone, head, center, record)


def _fit_position_embedding(model: nn.Module, state: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
    """A ViT checkpoint's position embeddings resampled to the model's grid as DINO does at run time."""
    if "pos_embed" not in state or not isinstance(getattr(model, "pos_embed", None), torch.Tensor):
        return
    have, want = state["pos_embed"], model.pos_embed
    if have.shape == want.shape:
        return
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    grid_want = int(round((want.shape[1] - prefix) ** 0.5))
    grid_have = int(round((have.shape[1] - prefix) ** 0.5))
    if have.shape[-1] != want.shape[-1] or grid_want ** 2 + prefix != want.shape[1]:
        return  # left for the key check to report
    state["pos_embed"] = resample_position_embedding(have, grid_want, prefix_tokens=prefix)
    record["position_embedding"] = f"{grid_have}x{grid_have} -> {grid_want}x{grid_want} (bicubic, DINO's offset 0.1)"


def apply_start(model: nn.Module, start: StartWeights) -> dict[str, Any]:
    """Load ``start``'s backbone tensors into ``model``; classifier heads it leaves out on purpose are dropped.

    Args:
        model: the backbone (built with ``num_classes=0``).
        start: from :func:`read_start`.

    Returns:
        The start's record, with what was dropped and resampled.

    Raises:
        StartWeightsError: keys that do not match (one line listing the missing and the unexpected ones), or
            tensors of another shape.
    """
    record = dict(start.record)
    state = dict(start.backbone)
    _fit_position_embedding(model, state, record)
    expected = model.state_dict()
    dropped = sorted(k for k in state if k not in expected and k.startswith(CLASSIFIER_PREFIXES))
    for k in dropped:
        del state[k]
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    wrong = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in state
                   if k in expected and state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        def listing(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" ... ({len(keys)} in all)" if len(keys) > 6 else "")

        parts = [f"missing {listing(missing)}" if missing else "", f"unexpected {listing(unexpected)}" if unexpected else "",
                 f"other shapes {listing(wrong)}" if wrong else ""]
        raise StartWeightsError(f"{record.get('source')}: does not fit the {type(model).__name__} backbone: "
                                + "; ".join(p for p in parts if p))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    if dropped:
        record["dropped"] = dropped[:20]
    return record
