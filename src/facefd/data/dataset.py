"""A dataset of image files with optional binary attribute labels."""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from facefd.data.images import load_rgb

log = logging.getLogger(__name__)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Independent 63-bit seed for one (epoch, index) draw."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32).astype(np.uint64)
               .dot(np.array([1, 2**32], dtype=np.uint64)) % (2**63))


class FaceImageDataset(Dataset):
    """Images as RGB through ``transform``; item ``{"crops"|"image", "index", "attributes"?}``.

    Indexing with ``(index, epoch)`` (see :class:`SeededEpochSampler`) makes the random transform
    a deterministic function of ``(seed, epoch, index)``; a plain int index uses epoch 0.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        transform: Optional[Callable[[Any], Any]] = None,
        labels: Optional[torch.Tensor] = None,
        attribute_names: Sequence[str] = (),
        seed: int = 0,
        skip_bad_images: bool = False,
    ) -> None:
        self.paths = list(paths)
        self.transform = transform
        self.labels = labels
        self.attribute_names = list(attribute_names)
        self.seed = seed
        self.skip_bad_images = skip_bad_images

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        batched = getattr(self.transform, "batched", None)  # MultiCropAugmentation(device=cuda|cpu|...)
        with torch.random.fork_rng(devices=[]):
            state = random.getstate()
            s = sample_seed(self.seed, epoch, index)
            torch.manual_seed(s)
            random.seed(s)
            try:
                if batched is not None:  # crops planned here, rendered per batch on the device
                    item, index = self._load(index, batched.plan)
                else:
                    image, index = self._load(index, load_rgb)
                    item = {}
                    if self.transform is not None:
                        image = self.transform(image)
                    item["crops" if isinstance(image, (list, tuple)) else "image"] = image
            finally:
                random.setstate(state)
        item["index"] = index
        if self.labels is not None:
            item["attributes"] = self.labels[index]
        return item

    def _load(self, index: int, read: Callable[[Path], Any]):
        """``read`` one image; a file that broke after the start-up check is reported (and, if asked,
        replaced by the next readable one, whose index and labels are then returned)."""
        for offset in range(len(self.paths)):
            used = (index + offset) % len(self.paths)
            path = self.paths[used]
            try:
                return read(path), used
            except Exception as exc:  # noqa: BLE001
                if not self.skip_bad_images:
                    raise OSError(f"cannot read image {path}: {exc} (set data.skip_bad_images=true to skip)") from exc
                log.warning("skipping unreadable image %s: %s", path, exc)
        raise OSError("no readable image left in the dataset")
