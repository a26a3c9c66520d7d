"""The foundation-model features the field reports beside FID: DINOv2 ViT-L/14 (FD_DINOv2, as dgm-eval
computes it) and CLIP ViT-L/14@336 image embeddings (CMMD, as its reference code computes them).

Both come through their own libraries' hub loaders and caches (timm and Hugging Face ``transformers``,
safetensors files: no pickle, no downloaded code), or from a local file (``dinov2@FILE``, ``clip@FOLDER``).
The hub is asked only when the person running facefd names the score; ``FACEFD_OFFLINE=1`` /
``HF_HUB_OFFLINE=1`` keep to the local cache.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facefd.utils.errors import UserError
from facefd.models.position_embedding import resample_position_embedding as dinov2_position_embedding  # noqa: F401
from facefd.utils.weights import cached_hub_file, is_offline  # noqa: F401  (re-exported)

#: timm's name of the DINOv2 ViT-L/14 that dgm-eval loads from torch.hub (``dinov2_vitl14``).
DINOV2_MODEL = "vit_large_patch14_dinov2.lvd142m"
#: dgm-eval's input side for DINOv2, and DINOv2's position-embedding interpolation offset.
DINOV2_INPUT = 224
DINOV2_INTERPOLATE_OFFSET = 0.1
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: The CLIP model CMMD's reference code embeds with, and its input side.
CLIP_MODEL = "openai/clip-vit-large-patch14-336"
CLIP_INPUT = 336
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def pil_resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Float [0, 1] images back to the uint8 pictures they were read from, resized by PIL (bicubic) as
    torchvision's ``Resize`` on a PIL image does, and returned as float [0, 1] (``ToTensor``)."""
    from PIL import Image

    arrays = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = [np.asarray(Image.fromarray(a).resize((size, size), Image.BICUBIC)) for a in arrays]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(255).to(images.device)


class DINOv2Features(nn.Module):
    """DINOv2 ViT-L/14 CLS features as dgm-eval computes FD_DINOv2: each image resized to 224 x 224 by PIL
    (bicubic), ImageNet normalisation, the 37 x 37 trained position embeddings resampled to 16 x 16 as the
    torch.hub model does at run time, the final norm's CLS token (1024-d).

    Args:
        weights: a local ``.safetensors`` / ``.pth`` state dict (timm's layout, loaded without unpickling);
            ``None``: timm's hub copy of ``vit_large_patch14_dinov2.lvd142m`` (cached by Hugging Face).
        model: the timm architecture (tests use a small one).
        input_size: the side images are resized to (224 as dgm-eval).
        revision: a hub commit hash that pins the weights (``None``: the hub's main branch).
        **model_kwargs: passed to ``timm.create_model`` (depth, width... for small test models).

    Example:
        >>> extractor = DINOv2Features()  # doctest: +SKIP
        >>> extractor(torch.rand(2, 3, 256, 256)).shape  # doctest: +SKIP
        torch.Size([2, 1024])
    """

    input_dtype = torch.float32

    def __init__(self, weights: Optional[str | Path] = None, model: str = DINOV2_MODEL, input_size: int = DINOV2_INPUT,
                 revision: Optional[str] = None, **model_kwargs: Any) -> None:
        super().__init__()
        import timm

        if weights is None and is_offline():  # the hub's cached copy, read as a local file: no request at all
            weights = cached_hub_file(f"timm/{model}", "model.safetensors", f"DINOv2 weights (timm's {model})",
                                      revision=revision)
        if weights is None:
            hub_id = f"timm/{model}" + (f"@{revision}" if revision else "")
            source = timm.create_model(model, pretrained=True, num_classes=0,
                                       pretrained_cfg_overlay={"hf_hub_id": hub_id}, **model_kwargs)
            state, origin = source.state_dict(), f"timm:{model} (Hugging Face hub {hub_id})"
            del source
        else:
            from facefd.metrics.weight_files import load_state_dict_file

            state, origin = load_state_dict_file(weights), str(weights)
        if weights is not None and not model_kwargs:  # a file: its size read from its tensors (DINOv2 heads are 64-d)
            width = int(state["cls_token"].shape[-1])
            depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
            model_kwargs = dict(embed_dim=width, depth=depth, num_heads=max(1, width // 64))
        patch = int(state["patch_embed.proj.weight"].shape[-1])
        if input_size % patch:
            raise UserError(f"DINOv2 input side {input_size} is not a multiple of its patch size {patch}")
        grid = input_size // patch
        state = dict(state)
        state["pos_embed"] = dinov2_position_embedding(state["pos_embed"], grid)
        self.net = timm.create_model(model.split(".")[0], pretrained=False, num_classes=0, img_size=input_size,
                                     **model_kwargs)
        missing, unexpected = self.net.load_state_dict(state, strict=False)
        if missing or [k for k in unexpected if not k.startswith("head")]:
            raise UserError(f"{origin}: not a {model} state dict (missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.net.eval().requires_grad_(False)
        self.input_side, self.num_features = input_size, int(self.net.num_features)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        digest = hashlib.sha256()
        for name, tensor in sorted(state.items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        self.fingerprint = hashlib.sha256(f"dinov2-dgm-eval-{input_size}:{digest.hexdigest()}".encode()).hexdigest()
        self.card = {"backbone": {"target": f"timm {model}", "weights": origin}, "input_size": input_size,
                     "resize": "PIL bicubic (dgm-eval)", "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                     "preprocessing_version": 1}

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """dgm-eval's transform: PIL bicubic resize of the (uint8) picture, to [0, 1], ImageNet normalisation."""
        x = pil_resize_uint8(images if images.dtype != torch.uint8 else images.float() / 255, self.input_side)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(images)).float()


class CLIPImageEmbedder(nn.Module):
    """CLIP ViT-L/14@336 image embeddings as CMMD's reference code computes them: images resized to 336 x 336
    (bicubic, antialiased), CLIP's normalisation without a crop, the projected image embedding, L2-normalised.

    Args:
        model: a Hugging Face id (``openai/clip-vit-large-patch14-336``) or a local folder saved with
            ``save_pretrained`` (safetensors only: no pickle is read).
        revision: the hub revision (a commit hash pins it).
        input_size: the side images are resized to.

    Example:
        >>> embedder = CLIPImageEmbedder()  # doctest: +SKIP
        >>> embedder(torch.rand(2, 3, 512, 512)).norm(dim=1)  # doctest: +SKIP
        tensor([1.0000, 1.0000])
    """

    input_dtype = torch.float32

    def __init__(self, model: str = CLIP_MODEL, revision: Optional[str] = None, input_size: int = CLIP_INPUT) -> None:
        super().__init__()
        try:
            from transformers import CLIPVisionModelWithProjection
        except ImportError as exc:
            raise ImportError('cmmd needs transformers: pip install -e ".[anonymize]"') from exc
        try:
            self.net = CLIPVisionModelWithProjection.from_pretrained(
                model, revision=revision, use_safetensors=True, local_files_only=is_offline())
        except OSError as exc:
            where = "the local folder" if Path(model).exists() else "the Hugging Face hub (or its cache)"
            raise UserError(f"CLIP model {model!r} could not be loaded from {where}: {str(exc).splitlines()[0]}") from None
        self.net.eval().requires_grad_(False)
        self.input_side, self.num_features = input_size, int(self.net.config.projection_dim)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        digest = hashlib.sha256()
        for name, tensor in sorted(self.net.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        self.fingerprint = hashlib.sha256(f"clip-cmmd-{input_size}:{digest.hexdigest()}".encode()).hexdigest()
        self.card = {"backbone": {"target": "transformers CLIPVisionModelWithProjection", "weights": model,
                                  "revision": revision}, "input_size": input_size,
                     "resize": "bicubic, antialiased (CMMD reference)", "mean": CLIP_MEAN, "std": CLIP_STD,
                     "preprocessing_version": 1}

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """CMMD's transform: bicubic, antialiased resize of [0, 1] images to 336, CLIP's normalisation (no crop)."""
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        x = F.interpolate(x, size=(self.input_side, self.input_side), mode="bicubic", antialias=True, align_corners=False)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        embeds = self.net(pixel_values=self.preprocess(images)).image_embeds.float()
        return embeds / embeds.norm(dim=1, keepdim=True).clamp_min(1e-12)
