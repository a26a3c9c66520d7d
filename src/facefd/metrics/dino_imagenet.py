"""DINO(I): the FDD paper's second feature space, DINO trained on ImageNet, as the reference evaluates it.

The reference DINO checkpoints (``dino_resnet50_pretrain.pth``, ``dino_deitsmall16_pretrain.pth``, ... or a
``main_dino.py`` training checkpoint) are read as data by :mod:`facefd.models.pretrained`; the architecture
is read from the tensors (ResNet-50, ViT-S or ViT-B with 16 or 8 px patches). Images get the reference's
evaluation preprocessing (``eval_knn.py`` / ``eval_linear.py``): the shorter side resized to 256 (PIL,
bicubic), a 224 x 224 centre crop, ImageNet's mean and std. The features are the backbone's output: the
ResNet's 2048-d average pool, the ViT's normed CLS token.

Example:
    >>> extractor = DINOImageNetFeatures("dino_resnet50_pretrain.pth")  # doctest: +SKIP
    >>> extractor(torch.rand(2, 3, 250, 250)).shape  # doctest: +SKIP
    torch.Size([2, 2048])
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from facefd.models.pretrained import StartWeightsError, apply_start, read_start

#: The reference evaluation's resize (shorter side) and centre crop.
RESIZE, CROP = 256, 224
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def architecture_of(state: dict[str, torch.Tensor]) -> tuple[str, dict]:
    """The timm architecture (and keyword arguments) of a DINO backbone's tensors.

    Raises:
        StartWeightsError: tensors of neither a ResNet-50 nor a ViT.

    Example:
        >>> architecture_of({"patch_embed.proj.weight": torch.zeros(384, 3, 16, 16), "pos_embed": torch.zeros(1, 197, 384)})
        ('vit_small_patch16_224', {})
    """
    if "layer4.2.conv3.weight" in state and "layer3.5.conv3.weight" in state:
        return "resnet50", {}
    if "patch_embed.proj.weight" in state:
        width, _, patch, _ = state["patch_embed.proj.weight"].shape
        size = {384: "small", 768: "base", 192: "tiny"}.get(int(width))
        if size is None or patch not in (8, 16):
            raise StartWeightsError(f"a ViT of width {width} and patch {patch}: not one of DINO's released ViTs")
        return f"vit_{size}_patch{patch}_224", {}
    raise StartWeightsError("neither a ResNet-50 nor a ViT of DINO's (no layer4.2.conv3 or patch_embed tensors)")


def reference_eval_crop(images: torch.Tensor) -> torch.Tensor:
    """The reference's evaluation transform on float [0, 1] images: back to the uint8 pictures they were read
    from, PIL bicubic resize of the shorter side to 256 (torchvision's ``Resize(256, interpolation=3)``), a
    224 x 224 centre crop (torchvision's rounding), normalised.

    Args:
        images: ``[N, 3, H, W]`` float in [0, 1].

    Returns:
        ``[N, 3, 224, 224]`` normalised.
    """
    from PIL import Image

    arrays = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for a in arrays:
        h, w = a.shape[:2]
        short, long = (h, w) if h <= w else (w, h)
        long_new = int(RESIZE * long / short)
        size = (RESIZE, long_new) if h <= w else (long_new, RESIZE)  # (h, w)
        picture = Image.fromarray(a).resize((size[1], size[0]), Image.BICUBIC)
        top, left = int(round((size[0] - CROP) / 2.0)), int(round((size[1] - CROP) / 2.0))
        out.append(np.asarray(picture)[top:top + CROP, left:left + CROP])
    x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(255).to(images.device)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class DINOImageNetFeatures(nn.Module):
    """DINO(I) features of a reference DINO checkpoint, with the reference's evaluation preprocessing.

    Args:
        weights: the checkpoint file, or a hub id (``timm:vit_small_patch16_224.dino``).
        revision: a hub commit hash pinning a hub id.
        key: of a ``main_dino.py`` checkpoint: ``teacher`` (the default) or ``student``.

    Example:
        >>> extractor = DINOImageNetFeatures("dino_deitsmall16_pretrain.pth")  # doctest: +SKIP
        >>> extractor.num_features  # doctest: +SKIP
        384
    """

    #: Images arrive at their own size: the extractor resizes and crops them itself, as the reference does.
    input_size = None

    def __init__(self, weights: str | Path, revision: Optional[str] = None, key: str = "teacher") -> None:
        super().__init__()
        import timm

        start = read_start(weights, revision, key)
        model_name, kwargs = architecture_of(start.backbone)
        self.net = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
        record = apply_start(self.net, start)
        self.net.eval().requires_grad_(False)
        self.num_features = int(self.net.num_features)
        self.fingerprint = hashlib.sha256(f"dino_imagenet:{model_name}:{record['sha256']}:{RESIZE}/{CROP}".encode()).hexdigest()
        self.card = {"backbone": {"target": "timm.create_model", "kwargs": {"model_name": model_name},
                                  "weights": record}, "input_size": CROP, "mean": list(IMAGENET_MEAN),
                     "std": list(IMAGENET_STD),
                     "resize": f"PIL bicubic, shorter side {RESIZE}, centre crop {CROP} (DINO's eval_knn / eval_linear)"}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(reference_eval_crop(images))
