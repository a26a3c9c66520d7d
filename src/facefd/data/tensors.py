"""Image files as float tensors at one size: the input side of every frozen-feature computation."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from facefd.data.images import load_rgb


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """The one resize of facefd's extractors and metrics: antialiased bilinear to ``size x size``
    (clean-fid's finding: resizing without antialiasing changes FID). ``[..., 3, H, W]`` float."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    batch = images if images.ndim == 4 else images[None]
    out = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out if images.ndim == 4 else out[0]



def pil_to_tensor(image: Image.Image, size: Optional[int] = None) -> torch.Tensor:
    """RGB PIL image -> float [3, H, W] in [0, 1], optionally resized (antialiased) to ``size x size``."""
    image = image.convert("RGB")
    x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(image.height, image.width, 3)
    x = x.permute(2, 0, 1).float() / 255.0
    return resize_square(x, size) if size else x


#: ``transform(image [3, H, W] float in [0, 1], index) -> image``: applied at the file's own resolution.
IndexedTransform = Callable[[torch.Tensor, int], torch.Tensor]


class ImageTensors(Dataset):
    """Float [0, 1] RGB tensors of image files, resized to the extractor's input size so mixed sizes batch.

    ``transform`` (e.g. a benchmark perturbation) runs before the resize, on the image as stored; it gets
    the item index so random perturbations can be seeded per image.
    """

    def __init__(self, paths: Sequence[Path], size: Optional[int], transform: Optional[IndexedTransform] = None) -> None:
        self.paths, self.size, self.transform = list(paths), size, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        try:
            image = load_rgb(self.paths[i])
        except Exception as exc:  # noqa: BLE001 - name the file, keep the cause
            raise OSError(f"cannot read image {self.paths[i]}: {exc}") from exc
        if self.transform is None:
            return pil_to_tensor(image, self.size)
        x = self.transform(pil_to_tensor(image), i).clamp(0, 1)
        return resize_square(x, self.size) if self.size else x


#: What a loader with :func:`collate_images` yields: one tensor, or a list when the sizes differ.
ImageBatch = Union[torch.Tensor, list]


def collate_images(items: Sequence[torch.Tensor]) -> ImageBatch:
    """Stack images of one size; keep a batch of mixed sizes as a list (for extractors that resize
    themselves, such as the FID Inception, which must see each image at its own size)."""
    first = items[0].shape
    return torch.stack(list(items)) if all(t.shape == first for t in items) else list(items)


def size_groups(batch: ImageBatch) -> list[tuple[list[int], torch.Tensor]]:
    """``[(row indices, stacked images)]``, one per image size in ``batch`` (one group for a tensor)."""
    if isinstance(batch, torch.Tensor):
        return [(list(range(batch.shape[0])), batch)]
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(batch):
        groups.setdefault(tuple(t.shape), []).append(i)
    return [(rows, torch.stack([batch[i] for i in rows])) for rows in groups.values()]


def by_size(batch: ImageBatch, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``fn`` on each same-size group of ``batch``; the rows come back in the batch's order."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    out: list[Optional[torch.Tensor]] = [None] * len(batch)
    for rows, images in size_groups(batch):
        for i, feats in zip(rows, fn(images)):
            out[i] = feats
    return torch.stack(out)  # type: ignore[arg-type]
