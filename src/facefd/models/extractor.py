"""Self-describing feature extractors: a ``safetensors`` file of backbone weights plus a JSON card.

The JSON names how to rebuild the backbone (``{"target": "timm.create_model", "kwargs": ...}``),
the feature width, the input size and the normalisation, so ``load_extractor`` needs nothing else
and never touches the network. A card may come from a stranger: its target must be on the allow-list
of :mod:`facefd.models.backbone` unless the caller passes ``trust_code=True``, and the fingerprint
(reference ``.npz`` files, feature caches, probe heads) covers everything that changes the features:
weights, architecture spec, width, input size, resize and normalisation.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from facefd.data.tensors import resize_square  # noqa: F401  (re-exported)
from facefd.models.backbone import build_from_spec
from facefd.utils.errors import UserError
from facefd.utils.files import atomic_path, file_sha256, write_text  # noqa: F401  (file_sha256 re-exported)

FORMAT = "facefd-extractor"
FORMAT_VERSION = 1
#: Version of the resize/normalise step in :meth:`FeatureExtractor.forward`; part of the fingerprint.
PREPROCESSING_VERSION = 1
#: The one resize :meth:`FeatureExtractor.preprocess` applies, as cards record it.
RESIZE = "bilinear, antialias=True, to input_size x input_size"


class ExtractorFileError(UserError, ValueError):
    """A missing, malformed or mismatching extractor file."""


class FeatureExtractor(nn.Module):
    """Images -> ``[N, num_features]``: the seam between training and every consumer of its features.

    Args:
        backbone: the module mapping normalised images to ``[N, num_features]``.
        num_features: the feature width.
        input_size: the side images are resized to.
        mean: per-channel normalisation mean.
        std: per-channel normalisation standard deviation.
        fingerprint: what identifies the features (weights, architecture, size, preprocessing).
        card: the JSON card the extractor was loaded from.

    Example:
        >>> import torch
        >>> from facefd import load_extractor
        >>> extractor = load_extractor(tiny_extractor)
        >>> extractor(torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)).shape  # resized to 32 px
        torch.Size([2, 96])

    Input: ``[N, 3, H, W]`` uint8 in [0, 255] or float in [0, 1]. Images whose size differs from
    ``input_size`` are resized to ``input_size x input_size`` with antialiased bilinear
    interpolation, then normalised with ``mean``/``std``. Always in eval mode, no gradients.
    """

    #: what FrechetDistance hands over: floats in [0, 1] (from uint8 or float images)
    input_dtype = torch.float32

    def __init__(self, backbone: nn.Module, num_features: int, input_size: int, mean: Sequence[float],
                 std: Sequence[float], fingerprint: str = "", card: Optional[dict[str, Any]] = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_features, self.input_size = int(num_features), int(input_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.fingerprint = fingerprint
        self.card = card or {}
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FeatureExtractor":
        return super().train(False)  # a frozen extractor: BN/dropout stay in inference mode

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape [N, 3, H, W], got {tuple(images.shape)}")
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return (resize_square(x, self.input_size) - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(self.preprocess(images))
        if feats.ndim != 2 or feats.shape[1] != self.num_features:
            raise ExtractorFileError(
                f"backbone returned features of shape {tuple(feats.shape)}, the card says [N, {self.num_features}]"
            )
        return feats


def module_fingerprint(module: nn.Module) -> str:
    """An extractor's ``fingerprint`` attribute, else a hash of its class and weights."""
    fp = getattr(module, "fingerprint", "")
    if fp:
        return str(fp)
    h = hashlib.sha256(type(module).__qualname__.encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_extractor(backbone: nn.Module, backbone_spec: dict[str, Any], path: str | Path, num_features: int,
                   input_size: int, mean: Sequence[float], std: Sequence[float],
                   source: Optional[dict[str, Any]] = None) -> Path:
    """Write ``path`` (``.safetensors``) and its card ``path.with_suffix('.json')``, each atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / "extractor.safetensors" if path.suffix == "" else path.with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in backbone.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    card = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "preprocessing_version": PREPROCESSING_VERSION,
        "weights": path.name, "sha256": file_sha256(path), "backbone": backbone_spec,
        "num_features": int(num_features), "input_size": int(input_size),
        "mean": [float(m) for m in mean], "std": [float(s) for s in std],
        "resize": RESIZE, "source": source or {},
    }
    write_text(path.with_suffix(".json"), json.dumps(card, indent=2))
    return path


def _card_and_weights(path: Path) -> tuple[dict[str, Any], Path, Path]:
    if path.is_dir():
        path = path / "extractor.safetensors"
    card_path = path if path.suffix == ".json" else path.with_suffix(".json")
    if not card_path.exists():
        raise ExtractorFileError(
            f"extractor card {card_path} not found: provide the .json written next to the .safetensors file by "
            "training (outputs/.../extractor/extractor.json) or by `python evaluate.py task=export ckpt_path=...`"
        )
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise ExtractorFileError(f"{card_path} is not valid JSON: {exc}") from exc
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        card = card if isinstance(card, dict) else {}
        raise ExtractorFileError(f"{card_path} is not a facefd extractor card (format={card.get('format')!r})")
    if card.get("format_version", 0) > FORMAT_VERSION:
        raise ExtractorFileError(f"{card_path} has format_version {card['format_version']}; "
                                 f"this facefd reads up to {FORMAT_VERSION}: upgrade facefd")
    missing = [k for k in CARD_KEYS if k not in card]
    if missing:
        raise ExtractorFileError(f"{card_path} lacks {missing}: not a complete facefd extractor card "
                                 "(re-export it with `python evaluate.py task=export ckpt_path=...`)")
    problems = _card_problems(card)
    if problems:
        raise ExtractorFileError(f"{card_path}: {'; '.join(problems)}")
    weights = card_path.parent / card["weights"]
    if Path(card["weights"]).name != card["weights"]:
        raise ExtractorFileError(f"{card_path}: weights {card['weights']!r} must be a file name next to the card")
    if not weights.exists():
        raise ExtractorFileError(f"extractor weights {weights} (named in {card_path}) not found")
    return card, weights, card_path


CARD_KEYS = ("weights", "backbone", "num_features", "input_size", "mean", "std")


def _card_problems(card: dict[str, Any]) -> list[str]:
    problems = []
    if not isinstance(card["backbone"], dict) or not isinstance(card["backbone"].get("target"), str):
        problems.append('"backbone" must be {"target": ..., "kwargs": {...}}')
    for key in ("num_features", "input_size"):
        if not isinstance(card[key], int) or isinstance(card[key], bool) or card[key] <= 0:
            problems.append(f'"{key}" must be a positive integer, got {card[key]!r}')
    for key in ("mean", "std"):
        v = card[key]
        if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)):
            problems.append(f'"{key}" must be 3 numbers, got {v!r}')
    if isinstance(card["std"], list) and any(isinstance(x, (int, float)) and x <= 0 for x in card["std"]):
        problems.append('"std" must be positive')
    if card.get("resize", RESIZE) != RESIZE:
        problems.append(f'"resize" is {card["resize"]!r}; this facefd resizes with {RESIZE!r} only')
    return problems


def card_fingerprint(card: dict[str, Any], weights_sha256: str) -> str:
    """The extractor's identity: a hash of the weights and of every card field that changes the features."""
    identity = {"weights_sha256": weights_sha256, "backbone": card["backbone"],
                "num_features": card["num_features"], "input_size": card["input_size"],
                "mean": [float(m) for m in card["mean"]], "std": [float(s) for s in card["std"]],
                "resize": card.get("resize", ""), "preprocessing_version": card.get("preprocessing_version", 1)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def load_extractor(path: str | Path, device: str | torch.device = "cpu", trust_code: Optional[bool] = None) -> FeatureExtractor:
    """Load an exported extractor (``.safetensors``, its ``.json`` card, or their folder), offline, in eval mode.

    Args:
        path: the weights file, its card, or the folder holding both.
        device: where to put the extractor.
        trust_code: see below; ``None`` follows :func:`facefd.trusting_code`.

    Returns:
        A :class:`FeatureExtractor` in eval mode.

    Raises:
        ExtractorFileError: a missing, malformed or mismatching file, named in the message.
        facefd.UntrustedCodeError: the card names code outside the allow-list without ``trust_code``.

    Example:
        >>> from facefd import load_extractor
        >>> extractor = load_extractor(tiny_extractor)
        >>> extractor.num_features, extractor.input_size
        (96, 32)

    ``trust_code=True`` lets the card name a backbone builder outside the allow-list (timm's registered
    models and facefd's builders): only for cards from people whose code you would run.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    card, weights, card_path = _card_and_weights(Path(path).expanduser())
    sha = file_sha256(weights)
    if card.get("sha256") and card["sha256"] != sha:
        raise ExtractorFileError(f"{weights} does not match its card: sha256 {sha[:12]}... != {card['sha256'][:12]}...")
    backbone = build_from_spec(card["backbone"], trust_code=trust_code, source=f"extractor card {card_path}")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ExtractorFileError(f"{weights} is not a readable safetensors file (truncated or corrupt?): {exc}") from exc
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ExtractorFileError(
            f"{weights} does not fit the backbone {card['backbone']} described in its card: {exc}"
        ) from exc
    fingerprint = card_fingerprint(card, sha)
    extractor = FeatureExtractor(backbone, card["num_features"], card["input_size"], card["mean"], card["std"],
                                 fingerprint=fingerprint, card=card)
    # channels-last weights: the convolutions run in NHWC without per-call reorders (ResNet-50 at 224 px:
    # 1.7x on 2 CPU cores, features equal to 5e-8); a ViT's one conv is unaffected
    extractor.backbone.to(memory_format=torch.channels_last)
    return extractor.to(device)
