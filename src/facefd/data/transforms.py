"""Image transforms: DINO multi-crop augmentation and the deterministic evaluation transform."""
from __future__ import annotations

import random
from typing import Optional, Sequence

import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

from facefd.data.batched_multicrop import DEVICES, BatchedMultiCrop, MultiCropRecipe

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomPILGaussianBlur:
    """PIL Gaussian blur with radius ~ U(0.1, 2.0), applied with probability ``p`` (reference ``utils.GaussianBlur``)."""

    def __init__(self, p: float = 0.5, radius_min: float = 0.1, radius_max: float = 2.0) -> None:
        self.p, self.radius_min, self.radius_max = p, radius_min, radius_max

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() > self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.radius_min, self.radius_max)))


def _normalize(mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    return T.Compose([T.ToTensor(), T.Normalize(mean, std)])


#: crop sizes the reference blur radius U(0.1, 2.0) was chosen for (DINO's 224 px global, 96 px local crops)
REFERENCE_GLOBAL_SIZE, REFERENCE_LOCAL_SIZE = 224, 96


class MultiCropAugmentation:
    """Two global crops and ``local_crops_number`` local crops of one image (reference ``DataAugmentationDINO``).

    Global crop 1: blur p=1.0; global crop 2: blur p=0.1 and solarisation p=0.2; local crops: blur
    p=0.5. All: random resized crop (bicubic), horizontal flip, colour jitter (0.4, 0.4, 0.2, 0.1)
    with p=0.8, grayscale p=0.2, ImageNet normalisation. Those are the defaults; every strength and
    probability is an argument. The blur radius (in output pixels) is the reference's for 224 / 96 px
    crops; ``scale_blur=True`` scales it with the crop size, so small crops are blurred as much,
    relative to their size, as the reference's (unscaled, a 64 px crop is blurred 3.5x as much).

    ``device`` chooses where the crops are made: ``loader`` (default) runs these PIL ops per image in the
    data-loader workers; ``cuda`` / ``accelerator`` / ``cpu`` draw the same random parameters in the workers
    and render whole batches with tensor ops on the training device (``cpu``: in the main process before the
    transfer), see :mod:`facefd.data.batched_multicrop`. ``decode="device"`` then also decodes JPEG files
    on that device.
    """

    def __init__(
        self,
        global_crops_scale: Sequence[float] = (0.4, 1.0),
        local_crops_scale: Sequence[float] = (0.05, 0.4),
        local_crops_number: int = 8,
        global_crop_size: int = 224,
        local_crop_size: int = 96,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.2,
        hue: float = 0.1,
        color_jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_p: Sequence[float] = (1.0, 0.1, 0.5),
        blur_radius: Sequence[float] = (0.1, 2.0),
        scale_blur: bool = False,
        solarize_p: float = 0.2,
        flip_p: float = 0.5,
        device: str = "loader",
        decode: str = "loader",
        resample: str = "bicubic",
    ) -> None:
        self.local_crops_number = local_crops_number
        self.global_crop_size, self.local_crop_size = global_crop_size, local_crop_size
        flip_and_color_jitter = T.Compose([
            T.RandomHorizontalFlip(p=flip_p),
            T.RandomApply([T.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)],
                          p=color_jitter_p),
            T.RandomGrayscale(p=grayscale_p),
        ])

        def radius(size: int, reference: int) -> tuple[float, float]:
            factor = size / reference if scale_blur else 1.0
            return blur_radius[0] * factor, blur_radius[1] * factor

        def blur(p: float, size: int, reference: int) -> RandomPILGaussianBlur:
            return RandomPILGaussianBlur(p, *radius(size, reference))

        if device not in DEVICES:
            raise ValueError(f"data.train_transform.device must be one of {DEVICES}, got {device!r}")
        if decode != "loader" and device == "loader":
            raise ValueError("decode=device needs device=cuda|accelerator|cpu (the batched multi-crop)")
        #: the batched tensor path, or None for the PIL ops in the loader
        self.batched: Optional[BatchedMultiCrop] = None
        if device != "loader":
            recipe = MultiCropRecipe(
                tuple(global_crops_scale), tuple(local_crops_scale), local_crops_number, global_crop_size,
                local_crop_size, brightness, contrast, saturation, hue, color_jitter_p, grayscale_p,
                tuple(blur_p), radius(global_crop_size, REFERENCE_GLOBAL_SIZE),
                radius(local_crop_size, REFERENCE_LOCAL_SIZE), solarize_p, flip_p)
            self.batched = BatchedMultiCrop(recipe, mean, std, device=device, decode=decode, resample=resample)

        bicubic = T.InterpolationMode.BICUBIC
        normalize = _normalize(mean, std)
        global_crop = T.RandomResizedCrop(global_crop_size, scale=tuple(global_crops_scale), interpolation=bicubic)
        self.global_transfo1 = T.Compose([
            global_crop, flip_and_color_jitter, blur(blur_p[0], global_crop_size, REFERENCE_GLOBAL_SIZE), normalize,
        ])
        self.global_transfo2 = T.Compose([
            global_crop, flip_and_color_jitter, blur(blur_p[1], global_crop_size, REFERENCE_GLOBAL_SIZE),
            T.RandomSolarize(128, p=solarize_p), normalize,
        ])
        self.local_transfo = T.Compose([
            T.RandomResizedCrop(local_crop_size, scale=tuple(local_crops_scale), interpolation=bicubic),
            flip_and_color_jitter, blur(blur_p[2], local_crop_size, REFERENCE_LOCAL_SIZE), normalize,
        ])

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        crops = [self.global_transfo1(image), self.global_transfo2(image)]
        crops += [self.local_transfo(image) for _ in range(self.local_crops_number)]
        return crops


class EvalTransform:
    """Resize the short side, centre crop, normalise: the view an exported extractor expects."""

    def __init__(self, size: int = 224, resize_ratio: float = 1.0, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        self.size = size
        self.transform = T.Compose([
            T.Resize(int(round(size * resize_ratio)), interpolation=T.InterpolationMode.BICUBIC, antialias=True),
            T.CenterCrop(size),
            _normalize(mean, std),
        ])

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)
