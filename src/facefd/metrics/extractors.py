"""Feature extractors for the Fréchet distance, all offline: DINO-faces (FDD), Inception (FID), timm."""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn

from facefd.models.extractor import FeatureExtractor, load_extractor
from facefd.utils.errors import UserError
from facefd.metrics.weight_files import WeightsFileError, load_state_dict_file  # noqa: F401 (public here too)
from facefd.utils.files import file_sha256
from facefd.utils.weights import KNOWN_WEIGHTS, fetch_weights

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
#: Feature layers of the FID Inception (torchmetrics' ``feature=``): pool1, pool2, pre-aux, final pool.
FID_LAYERS = (64, 192, 768, 2048)
#: Classes of the FID Inception's logits (1008: the TF graph's 1001 ImageNet classes padded).
LOGITS_WIDTH = 1008
#: How images reach 299 x 299: torch-fidelity's TF-1.x-compatible bilinear inside the network (pytorch-fid's
#: and torch-fidelity's FID), or clean-fid's PIL bicubic before it.
FID_RESIZES = {"tf_bilinear": "uint8 input, torch-fidelity TF-compatible bilinear to 299",
               "antialias": "uint8 input, torch's antialiased bilinear to 299 (torchmetrics' default, antialias=True)",
               "pil_bicubic": "uint8 input, PIL bicubic to 299 per channel (clean-fid's filter), rounded to uint8"}


class InceptionFID(nn.Module):
    """The FID Inception-v3 (TF-ported weights) from torch-fidelity: 2048-d pool features, or the 64/192/768
    layers torchmetrics also offers (``layer``).

    Takes float images in [0, 1]; they are quantised to uint8 as the FID network expects, which
    resizes to 299x299 itself (torch-fidelity's TF-compatible bilinear resize), whatever their size.
    """

    #: what FrechetDistance hands over: floats in [0, 1] (it quantises them itself, as torch-fidelity expects)
    input_dtype = torch.float32

    def __init__(self, weights_path: Optional[str | Path] = None, layer: int = 2048, resize: str = "tf_bilinear",
                 logits: bool = False) -> None:
        super().__init__()
        if layer not in FID_LAYERS:
            raise ValueError(f"the FID Inception has feature layers {FID_LAYERS}, not {layer}")
        if resize not in FID_RESIZES:
            raise ValueError(f"resize must be one of {FID_RESIZES}, got {resize!r}")
        if logits and resize == "antialias":
            raise ValueError("logits=True is available with the tf_bilinear and pil_bicubic resizes")
        # logits=True: the 1008 logits (torch-fidelity's logits_unbiased, the Inception Score's) follow the
        # layer's features in the same pass, so FID and IS come from one extraction
        self.num_features, self.resize, self.logits = layer + (LOGITS_WIDTH if logits else 0), resize, logits
        try:
            import torch_fidelity.feature_extractor_inceptionv3 as tfi
        except ImportError as exc:
            raise ImportError('metric=fid needs torch-fidelity: pip install -e ".[fid]"') from exc
        path = fetch_weights("inception") if weights_path is None else Path(weights_path).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"FID Inception weights {path} not found: give the file {FID_WEIGHTS_NAME} "
                "(the standard pytorch-fid/torch-fidelity weights), or no path to fetch it"
            )
        digest = file_sha256(path)
        check_claimed_weights(path, digest, "inception")
        state = load_state_dict_file(path)
        with _torch_fidelity_loads(tfi, state):  # torch-fidelity would unpickle the file itself
            if resize == "antialias":  # torchmetrics' own network, so its values are torchmetrics' exactly
                from torchmetrics.image.fid import NoTrainInceptionV3

                self.net = NoTrainInceptionV3("inception-v3-compat", [str(layer)],
                                              feature_extractor_weights_path=str(path), antialias=True)
            else:
                self.net = tfi.FeatureExtractorInceptionV3(
                    "inception-v3-compat", [str(layer)] + (["logits_unbiased"] if logits else []),
                    feature_extractor_weights_path=str(path))
        # channels-last weights: oneDNN / cuDNN convolutions run in NHWC without per-call reorders (1.4x on
        # 2 CPU cores, features equal to 1e-8; bench/fd_folder.py); values and fingerprint are unchanged
        self.net.to(memory_format=torch.channels_last)
        tag = "inception-fid" if layer == 2048 else f"inception-fid-{layer}"
        tag += "" if resize == "tf_bilinear" else f"-{resize}"
        #: the fingerprint of the layer's features alone (what FID statistics made without logits carry)
        self.layer_fingerprint = hashlib.sha256(f"{tag}:{digest}".encode()).hexdigest()
        tag += "+logits" if logits else ""
        self.fingerprint = hashlib.sha256(f"{tag}:{digest}".encode()).hexdigest()
        self.card = {"backbone": {"target": "torch_fidelity inception-v3-compat", "weights": path.name},
                     "input_size": 299, "resize": FID_RESIZES[resize], "preprocessing_version": 1}
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images if images.dtype == torch.uint8 else (images.clamp(0, 1) * 255).round().to(torch.uint8)
        if self.resize == "pil_bicubic":
            x = pil_bicubic_299(x)
        if self.resize == "antialias":
            return self.net(x)  # in the network's dtype (torchmetrics' set_dtype)
        out = self.net(x)
        if self.logits:
            return torch.cat([out[0].reshape(x.shape[0], -1), out[1].reshape(x.shape[0], -1)], dim=1).float()
        return out[0].reshape(x.shape[0], -1).float()


def pil_bicubic_299(images: torch.Tensor) -> torch.Tensor:
    """clean-fid's resize: each channel as a float image through PIL's bicubic filter to 299 x 299, clipped to
    [0, 255]; then rounded to uint8, which torch-fidelity's network requires (clean-fid feeds the floats)."""
    import numpy as np
    from PIL import Image

    out = torch.empty(images.shape[0], 3, 299, 299, dtype=torch.uint8)
    for i, img in enumerate(images.cpu().numpy()):
        for c in range(3):
            channel = Image.fromarray(img[c].astype(np.float32), mode="F").resize((299, 299), Image.BICUBIC)
            out[i, c] = torch.from_numpy(np.asarray(channel).clip(0, 255).round().astype(np.uint8))
    return out.to(images.device)


def inception_extractor(weights_path: Optional[str | Path] = None, resize: str = "tf_bilinear") -> InceptionFID:
    """The FID Inception from ``weights_path``, or (``None``) the standard file, fetched and verified."""
    return InceptionFID(weights_path, resize=resize)


def check_claimed_weights(path: Path, digest: str, name: str) -> None:
    """A file named like the standard ``name`` weights must hash to them: a stranger's file under the
    standard name is refused rather than silently giving other numbers."""
    spec = KNOWN_WEIGHTS[name]
    if path.name in (spec.filename, *spec.aliases) and digest != spec.sha256:
        raise WeightsFileError(f"{path} is named like {spec.description} but its sha256 {digest[:16]}... is not "
                               f"{spec.sha256[:16]}...: rename it if it is another network on purpose")


@contextlib.contextmanager
def _torch_fidelity_loads(tfi: Any, state: dict[str, torch.Tensor]) -> Iterator[None]:
    """While torch-fidelity builds its network, its ``torch.load`` (``weights_only=False``) returns the
    state dict already loaded safely instead of reading the file."""

    class _Torch:
        def __getattr__(self, name: str) -> Any:
            return getattr(torch, name)

        @staticmethod
        def load(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
            return state

    original = tfi.torch
    tfi.torch = _Torch()
    try:
        yield
    finally:
        tfi.torch = original


def timm_extractor(model_name: str, weights_path: Optional[str | Path] = None, random_init: bool = False,
                   input_size: Optional[int] = None, seed: int = 0) -> FeatureExtractor:
    """Any timm model's pooled features, with weights from a local file (``.safetensors``/``.pth``), or
    without one timm's hub copy (``timm:NAME``, fetched through timm's loader and cache; offline: the cache).

    ``random_init=True`` keeps random weights on purpose (the "random network" FD of StyleGAN-XL),
    drawn from ``seed`` so that the same name gives the same network.
    """
    import timm

    kwargs = {"num_classes": 0}
    if weights_path is None and not random_init:  # timm's hub copy, through timm's loader and cache
        from facefd.models.pretrained import apply_start, read_start

        start = read_start(f"timm:{model_name}")
        model = timm.create_model(model_name, pretrained=False, **kwargs)
        source = apply_start(model, start)["sha256"]
    elif weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"weights file {path} for timm model {model_name!r} not found")
        if path.suffix != ".safetensors":  # a pickle: proven to hold only tensors before timm's own loader sees it
            load_state_dict_file(path)
        model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
        source = file_sha256(path)
    else:  # seeded random weights: random:<model> is the same network in every run (the fingerprint hashes them)
        from facefd.models.extractor import module_fingerprint

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_random_timm_model(model_name, **kwargs)
        source = "random:" + module_fingerprint(model)
    cfg = timm.data.resolve_data_config({}, model=model)
    size = input_size or int(cfg["input_size"][-1])
    from facefd.models.backbone import forward_width

    ext = FeatureExtractor(model.eval(), forward_width(model, size), size, cfg["mean"], cfg["std"])
    ext.fingerprint = hashlib.sha256(f"timm:{model_name}:{source}:{size}".encode()).hexdigest()
    ext.card = {"backbone": {"target": "timm.create_model", "kwargs": {"model_name": model_name}, "weights": source},
                "input_size": size, "mean": list(cfg["mean"]), "std": list(cfg["std"]),
                "resize": "bilinear, antialias=True, to input_size x input_size", "preprocessing_version": 1}
    return ext


def create_random_timm_model(model_name: str, **kwargs) -> torch.nn.Module:
    """A randomly initialised timm model as DINO's reference builds it: residual blocks start switched on
    (``zero_init_last=False``, torchvision's ``zero_init_residual=False``) where the family has that switch,
    so a "random network" row is the network a DINO run (``backbone=resnet18``) starts from."""
    import timm

    try:
        return timm.create_model(model_name, pretrained=False, zero_init_last=False, **kwargs)
    except TypeError:  # families without residual zero-init (ViT, ConvNeXt, ...)
        return timm.create_model(model_name, pretrained=False, **kwargs)


def fdd_extractor(path: str | Path, trust_code: Optional[bool] = None) -> FeatureExtractor:
    """The DINO-faces extractor exported by ``train.py`` (see :func:`facefd.load_extractor`)."""
    return load_extractor(path, trust_code=trust_code)


EXTRACTOR_NAMES = ("fdd@FILE, inception (or fid) with or without @FILE, dinov2 with or without @FILE, clip with or "
                   "without @MODEL_OR_FOLDER, identity, dino_imagenet@FILE, timm:MODEL with or without @FILE, "
                   "random:MODEL, or {_target_: ...}")


class ExtractorSpecError(UserError, ValueError):
    """An extractor entry the parser does not know, or one that lacks its file."""


def check_extractor_entry(entry: Any) -> None:
    """Check an extractor entry before anything loads: a known name, the file a name needs, a timm model
    that exists. One line, with the accepted forms.

    Raises:
        ExtractorSpecError: otherwise.

    Example:
        >>> check_extractor_entry("random:resnet-18")
        Traceback (most recent call last):
        ...
        facefd.metrics.extractors.ExtractorSpecError: extractor 'random:resnet-18': 'resnet-18' is not a timm model (timm.list_models('resnet*') lists them)
    """
    if isinstance(entry, nn.Module) or not isinstance(entry, str):
        return
    name, _, path = entry.partition("@")
    kind, _, model = name.partition(":")
    if name in ("inception", "fid", "dinov2", "clip", "identity"):
        return
    if name in ("fdd", "dino_imagenet"):
        if not path:
            raise ExtractorSpecError(f"extractor {entry!r} needs its weights file: {name}@FILE (accepted: {EXTRACTOR_NAMES})")
    elif not (kind in ("random", "timm") and model):
        raise ExtractorSpecError(f"unknown extractor {entry!r}; accepted: {EXTRACTOR_NAMES}")
    if model:
        import timm

        if not timm.is_model(model) and not timm.is_model(model.split(".")[0]):
            pattern = model.split("_")[0].split("-")[0]
            raise ExtractorSpecError(f"extractor {entry!r}: {model!r} is not a timm model "
                                     f"(timm.list_models('{pattern}*') lists them)")


def build_extractor(name: Any, path: Optional[str | Path] = None, input_size: Optional[int] = None) -> nn.Module:
    """An extractor by short name, as the command line spells it (``probe.extractor=fdd``).

    ``fdd`` (the DINO-faces file written by train.py), ``inception`` (FID's network: a local weights file,
    or without one the standard file fetched and verified), ``dino_imagenet`` (DINO(I): a reference DINO
    checkpoint with the reference's evaluation crop), ``timm:<model>`` (local weights, or timm's hub copy),
    ``random:<model>`` (random timm weights), an ``nn.Module``, or a config with ``_target_`` (any module of yours).

    Args:
        name: the short name, a module, or a ``{_target_: ...}`` mapping.
        path: the weights file the name needs (``fdd``, ``inception``, ``timm:``).
        input_size: the side ``timm:``/``random:`` extractors resize to (default: the model's own).

    Returns:
        The extractor module.

    Raises:
        ValueError: an unknown name, or a name that needs a file given without one.

    Example:
        >>> from facefd.metrics.extractors import build_extractor
        >>> extractor = build_extractor("random:test_resnet", input_size=64)  # timm's test network, random weights
        >>> extractor.num_features, extractor.input_size
        (96, 64)
    """
    if isinstance(name, nn.Module):
        return name
    if not isinstance(name, str):  # a mapping with _target_ (DictConfig or dict)
        from hydra.utils import instantiate

        return instantiate(name)

    def need_path() -> str | Path:
        if not path:
            raise ExtractorSpecError(f"extractor {name!r} needs a weights file: {name}@FILE or extractor_path=<file>")
        return path

    if name == "fdd":
        return fdd_extractor(need_path())
    if name in ("inception", "fid"):
        return inception_extractor(path)  # no file: the standard weights, fetched and verified
    if name == "identity":  # dlib's 128-d face-identity embedding of each image's biggest face
        from facefd.models.identity import IdentityFeatures

        return IdentityFeatures()
    if name == "dinov2":  # FD_DINOv2's network (dgm-eval's preprocessing); no file: timm's hub copy
        from facefd.metrics.foundation import DINOv2Features

        return DINOv2Features(path)
    if name == "clip":  # CMMD's CLIP ViT-L/14@336; no model: the Hugging Face hub id
        from facefd.metrics.foundation import CLIP_MODEL, CLIPImageEmbedder

        return CLIPImageEmbedder(str(path) if path else CLIP_MODEL)
    if name == "dino_imagenet":  # DINO(I): a reference DINO checkpoint, the reference's evaluation crop
        from facefd.metrics.dino_imagenet import DINOImageNetFeatures

        return DINOImageNetFeatures(need_path())
    kind, _, model_name = name.partition(":")
    if kind == "timm" and model_name:  # no file: timm's hub copy
        return timm_extractor(model_name, path, input_size=input_size)
    if kind == "random" and model_name:
        return timm_extractor(model_name, random_init=True, input_size=input_size)
    check_extractor_entry(name)  # a timm name that does not exist: one line, not timm's RuntimeError
    raise ExtractorSpecError(f"unknown extractor {name!r}; accepted: {EXTRACTOR_NAMES}")


#: Display names of the extractors whose Fréchet distance has a name of its own.
METRIC_NAMES = {"fdd": "FDD", "inception": "FID", "fid": "FID", "dinov2": "FD_DINOv2", "dino_imagenet": "FD_DINO(I)"}


def parse_extractor_entry(entry: Any) -> tuple[str, Any, Optional[str]]:
    """The one parser of extractor entries, as every task and the command line spell them.

    Args:
        entry: ``"NAME"`` or ``"NAME@FILE"`` (``fdd@extractor.safetensors``, ``inception@pt_inception.pth``,
            ``timm:MODEL@FILE``, ``random:MODEL``), or a mapping with ``_target_`` (any module of yours).

    Returns:
        ``(label, name, path)``: the label shown in tables, what :func:`build_extractor` takes, and the
        file (``None`` when the entry names none).

    Example:
        >>> parse_extractor_entry("fdd@run/extractor.safetensors")
        ('fdd', 'fdd', 'run/extractor.safetensors')
        >>> parse_extractor_entry({"_target_": "my.project.Encoder"})[0]
        'Encoder'
    """
    if isinstance(entry, str):
        name, _, path = entry.partition("@")
        return name, name, path or None
    target = str(entry.get("_target_", "module"))
    return target.rsplit(".", 1)[-1], entry, None


def extractor_label(entry: Any) -> str:
    """The display name of an extractor entry: ``FDD`` for ``fdd@...``, ``FID`` for ``inception@...``,
    else the entry's own name."""
    label = parse_extractor_entry(entry)[0]
    return METRIC_NAMES.get(label, label)


def build_extractors(entries: Sequence[Any]) -> list[tuple[str, nn.Module]]:
    """``[(display name, extractor)]`` of extractor entries, all built before any work starts.

    Args:
        entries: entries as :func:`parse_extractor_entry` reads them.

    Returns:
        One ``(label, module)`` pair per entry, in order.

    Raises:
        ValueError: when two entries have the same display name.
    """
    for entry in entries:  # every entry checked before the first one loads
        check_extractor_entry(entry)
    out = []
    for entry in entries:
        _, name, path = parse_extractor_entry(entry)
        out.append((extractor_label(entry), build_extractor(name, path)))
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"extractors must have distinct names, got {labels}")
    return out
