"""Image perturbations of the FDD paper's benchmark (Fig. 1): each a callable on one float image
``[3, H, W]`` in [0, 1] with a strength parameter, seeded per image so results are reproducible.

They are instantiated from ``conf/task/benchmark.yaml``'s ``perturbations:`` map, so a user adds one with
``+perturbations.my_blur={_target_:facefd.evaluation.perturbations.GaussianBlur,sigma:8}`` or any
callable of the same signature.
"""
from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF



def image_generator(seed: int, index: int) -> torch.Generator:
    """The generator of one image: a function of the run seed and the image's index only."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state % (2**63)))


class Perturbation:
    """Base class: ``describe()`` (name and settings) is part of the feature-cache key."""

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def describe(self) -> str:
        return json.dumps({"type": type(self).__name__, **vars(self)}, sort_keys=True, default=str)


class VerticalFlip(Perturbation):
    def __call__(self, image, generator):
        return image.flip(-2)


class HorizontalFlip(Perturbation):
    def __call__(self, image, generator):
        return image.flip(-1)


class Rotate90(Perturbation):
    """Rotation by ``turns`` quarter turns (counter-clockwise)."""

    def __init__(self, turns: int = 1) -> None:
        self.turns = int(turns)

    def __call__(self, image, generator):
        return torch.rot90(image, self.turns, dims=(-2, -1))


class RandomErasing(Perturbation):
    """``num_patches`` squares of side ``patch_fraction`` x the shorter side, at uniform positions,
    filled with ``value`` (a grey level in [0, 1])."""

    def __init__(self, num_patches: int = 4, patch_fraction: float = 0.1, value: float = 0.0) -> None:
        self.num_patches, self.patch_fraction, self.value = int(num_patches), float(patch_fraction), float(value)

    def __call__(self, image, generator):
        out = image.clone()
        h, w = image.shape[-2:]
        side = max(1, int(round(self.patch_fraction * min(h, w))))
        for _ in range(self.num_patches):
            top = int(torch.randint(0, h - side + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - side + 1, (1,), generator=generator))
            out[..., top:top + side, left:left + side] = self.value
        return out


class GaussianBlur(Perturbation):
    """Gaussian blur of standard deviation ``sigma`` pixels (kernel 2 * ceil(3 sigma) + 1)."""

    def __init__(self, sigma: float = 2.0) -> None:
        self.sigma = float(sigma)

    def __call__(self, image, generator):
        k = 2 * math.ceil(3 * self.sigma) + 1
        return TF.gaussian_blur(image, kernel_size=[k, k], sigma=[self.sigma, self.sigma])


class GaussianNoise(Perturbation):
    """Additive N(0, ``std``²) noise per pixel and channel, clipped to [0, 1]."""

    def __init__(self, std: float = 0.05) -> None:
        self.std = float(std)

    def __call__(self, image, generator):
        return (image + self.std * torch.randn(image.shape, generator=generator)).clamp(0, 1)


class JPEGCompression(Perturbation):
    """Encode and decode as JPEG at ``quality`` (1-95) with Pillow."""

    def __init__(self, quality: int = 20) -> None:
        self.quality = int(quality)

    def __call__(self, image, generator):
        array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="JPEG", quality=self.quality)
        decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        return torch.from_numpy(decoded.copy()).permute(2, 0, 1).float() / 255.0


class Pixelate(Perturbation):
    """Blocks of ``block`` x ``block`` pixels: area-average down, nearest-neighbour up."""

    def __init__(self, block: int = 8) -> None:
        self.block = int(block)

    def __call__(self, image, generator):
        h, w = image.shape[-2:]
        small = F.interpolate(image[None], size=(max(1, h // self.block), max(1, w // self.block)), mode="area")
        return F.interpolate(small, size=(h, w), mode="nearest")[0]


class ColorJitter(Perturbation):
    """Brightness, contrast and saturation factors drawn from [1 - s, 1 + s] and a hue shift from
    [-hue, hue], per image from its generator."""

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.1) -> None:
        self.brightness, self.contrast, self.saturation, self.hue = map(float, (brightness, contrast, saturation, hue))

    def __call__(self, image, generator):
        u = torch.rand(4, generator=generator)
        out = TF.adjust_brightness(image, 1 + self.brightness * (2 * float(u[0]) - 1))
        out = TF.adjust_contrast(out, 1 + self.contrast * (2 * float(u[1]) - 1))
        out = TF.adjust_saturation(out, 1 + self.saturation * (2 * float(u[2]) - 1))
        return TF.adjust_hue(out, self.hue * (2 * float(u[3]) - 1)).clamp(0, 1)


class Grayscale(Perturbation):
    """Blend towards the ITU-R 601 luma by ``amount`` (1: fully grey)."""

    def __init__(self, amount: float = 1.0) -> None:
        self.amount = float(amount)

    def __call__(self, image, generator):
        grey = TF.rgb_to_grayscale(image, num_output_channels=3)
        return (1 - self.amount) * image + self.amount * grey


class CenterZoom(Perturbation):
    """Crop the central 1/``factor`` of each side and resize back to the original size."""

    def __init__(self, factor: float = 1.5) -> None:
        if factor < 1:
            raise ValueError(f"zoom factor must be >= 1, got {factor}")
        self.factor = float(factor)

    def __call__(self, image, generator):
        h, w = image.shape[-2:]
        ch, cw = max(1, int(round(h / self.factor))), max(1, int(round(w / self.factor)))
        top, left = (h - ch) // 2, (w - cw) // 2
        crop = image[..., top:top + ch, left:left + cw]
        return F.interpolate(crop[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]


def describe(perturbation: Any) -> str:
    """A stable description for cache keys (a plain callable: its qualified name)."""
    if isinstance(perturbation, Perturbation):
        return perturbation.describe()
    return f"{type(perturbation).__module__}.{type(perturbation).__qualname__}:{getattr(perturbation, '__dict__', {})}"


class seeded:  # noqa: N801 - used as a function
    """``(image, index) -> image`` for :class:`facefd.data.tensors.ImageTensors`: ``perturbation`` with a
    generator seeded by ``seed`` and the image's index (a class, so it pickles into extraction processes)."""

    def __init__(self, perturbation: Any, seed: int) -> None:
        self.perturbation, self.seed = perturbation, seed

    def __call__(self, image: torch.Tensor, index: int) -> torch.Tensor:
        return self.perturbation(image, image_generator(self.seed, index))


__all__ = [
    "CenterZoom", "ColorJitter", "GaussianBlur", "GaussianNoise", "Grayscale", "HorizontalFlip", "JPEGCompression",
    "Perturbation", "Pixelate", "RandomErasing", "Rotate90", "VerticalFlip", "describe", "image_generator", "seeded",
]
