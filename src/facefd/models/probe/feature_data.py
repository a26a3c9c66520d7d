"""Frozen features of an image data module's splits, for training probe heads in seconds.

Wraps any :class:`FaceImageDataModule` (its splits and labels) and an extractor. Features are
extracted in ``prepare_data`` (once per node, before DDP workers read them) and cached on disk with
:class:`facefd.models.probe.features.FeatureCache`, so a ``-m`` sweep over heads re-uses them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from facefd.data.attributes import read_attribute_table
from facefd.data.datamodule import SPLITS, AUTO_ATTRIBUTE_FILES, FaceImageDataModule
from facefd.data.images import drop_bad_images, list_images
from facefd.models.probe.features import FeatureCache

log = logging.getLogger(__name__)


class FeatureDataset(Dataset):
    """Items ``{"features": [D], "attributes": [A] (NaN = unknown), "categories": [C] (-1 = unknown)}``."""

    def __init__(self, features: torch.Tensor, attributes: Optional[torch.Tensor],
                 categories: Optional[torch.Tensor]) -> None:
        n = features.shape[0]
        self.features = features
        self.attributes = attributes if attributes is not None else torch.zeros(n, 0)
        self.categories = categories if categories is not None else torch.zeros(n, 0, dtype=torch.long)

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"features": self.features[i], "attributes": self.attributes[i], "categories": self.categories[i]}


class ProbeFeatureDataModule(pl.LightningDataModule):
    """Args:
        images: the image data module whose splits and labels are used (its transforms are not).
        extractor: any feature extractor module (see :func:`facefd.metrics.extractors.build_extractor`).
        cache_dir: where feature files are cached.
        extra_test_root / extra_test_attributes_file: an independently labelled folder (the FDD paper's
            separate gender test set), evaluated as a second test set named ``extra_test_name``. It may
            label only some of the attributes; the others are ignored there.
        parallel: ``devices``, ``accelerator``, ``strategy``: extract in several processes through Lightning.
    """

    def __init__(self, images: FaceImageDataModule, extractor: nn.Module, cache_dir: str, batch_size: int = 256,
                 num_workers: int = 0, extract_batch_size: int = 64, extract_num_workers: int = 2,
                 device: str = "auto", image_size: Optional[int] = None, extra_test_root: Optional[str] = None,
                 extra_test_attributes_file: Optional[str] = "auto", extra_test_name: str = "independent",
                 parallel: Optional[dict[str, Any]] = None) -> None:
        super().__init__()
        self.images, self.extractor = images, extractor
        self.cache = FeatureCache(cache_dir)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.extract_kwargs: dict[str, Any] = dict(batch_size=extract_batch_size, num_workers=extract_num_workers,
                                                   device=device, image_size=image_size, **(parallel or {}))
        self.extra_test_root = Path(extra_test_root).expanduser() if extra_test_root else None
        self.extra_test_attributes_file, self.extra_test_name = extra_test_attributes_file, extra_test_name
        self.features: dict[str, torch.Tensor] = {}
        self.datasets: dict[str, FeatureDataset] = {}
        self._extra_test: Optional[tuple[list[Path], torch.Tensor]] = None
        self.extractor_fingerprint = self.cache.fingerprint(extractor)

    # the image module's description, re-exported for ProbeModule and callbacks
    @property
    def attribute_names(self) -> list[str]:
        return self.images.attribute_names

    @property
    def categories(self) -> dict[str, list[str]]:
        return self.images.categories

    @property
    def labels(self) -> dict[str, Optional[torch.Tensor]]:
        return self.images.labels

    @property
    def bad_images(self) -> list[tuple[str, str]]:
        return self.images.bad_images

    @property
    def num_features(self) -> int:
        return int(self.features["train"].shape[1])

    @property
    def has_extra_test(self) -> bool:
        return self.extra_test_root is not None

    def _split_features(self, split: str) -> torch.Tensor:
        paths = self.images.splits[split]
        if not paths:
            return torch.zeros(0, 0)
        return self.cache.get(self.extractor, paths, name=f"{split} features", **self.extract_kwargs)

    def prepare_data(self) -> None:
        self.images.prepare_data()
        self.images.setup("fit")
        # extracted once here (rank 0 of each node); setup() on every rank loads them from the cache
        for split in SPLITS:
            if self.images.splits[split]:
                self.cache.ensure(self.extractor, self.images.splits[split], name=f"{split} features",
                                  **self.extract_kwargs)
        if self.has_extra_test:
            paths, _ = self._read_extra_test()
            self.cache.ensure(self.extractor, paths, name=f"{self.extra_test_name} features", **self.extract_kwargs)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.datasets:
            return
        self.images.setup(stage)
        if not self.images.attribute_names and not self.images.categories:
            raise ValueError(f"{self.images.root} has no attribute or category labels to train a probe on "
                             "(give data.attributes_file=... or data.categories_file=...)")
        for split in SPLITS:
            self.features[split] = self._split_features(split)
        width = self.features["train"].shape[1]
        for split in SPLITS:
            feats = self.features[split] if self.features[split].numel() else torch.zeros(0, width)
            self.datasets[split] = FeatureDataset(feats, self.images.labels[split],
                                                  self.images.category_labels.get(split))
        if self.has_extra_test:
            paths, labels = self._read_extra_test()
            feats = self.cache.get(self.extractor, paths, name=f"{self.extra_test_name} features",
                                   **self.extract_kwargs)
            self.datasets["extra_test"] = FeatureDataset(feats, labels, None)

    def _read_extra_test(self) -> tuple[list[Path], torch.Tensor]:
        """The independent folder's images and labels for this probe's attributes (NaN where it has none);
        read (and every image decoded) once, for prepare_data and setup together."""
        if self._extra_test is None:
            self._extra_test = self._load_extra_test()
        return self._extra_test

    def _load_extra_test(self) -> tuple[list[Path], torch.Tensor]:
        root = self.extra_test_root
        attr_file = self.extra_test_attributes_file
        if attr_file in (None, "auto"):
            attr_path = next((root / n for n in AUTO_ATTRIBUTE_FILES if (root / n).exists()), None)
            if attr_path is None:
                raise FileNotFoundError(f"extra test folder {root} has no {' or '.join(AUTO_ATTRIBUTE_FILES)}; "
                                        "give extra_test_attributes_file=<file>")
        else:
            attr_path = Path(attr_file) if Path(attr_file).is_absolute() else root / attr_file
        table = read_attribute_table(attr_path)
        self.images.setup("fit")
        shared = [n for n in self.images.attribute_names if n in table.names]
        if not shared:
            raise ValueError(f"{attr_path} labels none of the probe's attributes {self.images.attribute_names}")
        files = drop_bad_images(list_images(root), self.images.skip_bad_images, progress=False)
        rows = [table.lookup(f.relative_to(root).as_posix()) for f in files]
        keep = [i for i, r in enumerate(rows) if r is not None]
        if not keep:
            raise ValueError(f"no image under {root} is listed in {attr_path}")
        labels = np.full((len(keep), len(self.images.attribute_names)), np.nan, dtype=np.float32)
        for j, name in enumerate(self.images.attribute_names):
            if name in table.names:
                labels[:, j] = table.values[[rows[i] for i in keep], table.names.index(name)]
        return [files[i] for i in keep], torch.from_numpy(labels)

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.datasets[name], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        if "extra_test" in self.datasets:
            return [self._loader("test", shuffle=False), self._loader("extra_test", shuffle=False)]
        return self._loader("test", shuffle=False)
