"""Lightning data modules: any face image folder, and the embedded sample set."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from facefd.data.attributes import read_attribute_table, read_category_table, read_partition_file
from facefd.data.dataset import FaceImageDataset
from facefd.data.images import IMAGE_EXTENSIONS, BadImagesError, find_bad_images, list_images, seeded_sample
from facefd.data.sample_faces import generate_sample_faces
from facefd.data.sampler import SeededEpochSampler
from facefd.utils.errors import ConfigError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: File names ``attributes_file="auto"`` looks for: CelebA, then CelebAMask-HQ's annotation file.
AUTO_ATTRIBUTE_FILES = ("list_attr_celeba.txt", "CelebAMask-HQ-attribute-anno.txt")


class FaceImageDataModule(pl.LightningDataModule):
    """An image folder (recursive) with optional CelebA-style attributes and partition.

    Args:
        root: the image folder.
        attributes_file: ``list_attr_celeba.txt``-style file or CSV; ``"auto"`` uses
            ``root/list_attr_celeba.txt`` (or CelebAMask-HQ's annotation file) when present. Images it
            does not list are dropped.
        attributes: binary attributes to keep; ``None`` or ``"all"``: every column of the file.
        categories_file / categories: a CSV with categorical labels (FairFace: ``file,age,gender,race``)
            and the columns to use, a list or a ``{name: column}`` map (``{ethnicity: race}``).
        partition_file: ``list_eval_partition.txt``-style file (0/1/2 = train/val/test); ``"auto"``
            as above; without one the split is a seeded random split by ``val_fraction``/``test_fraction``.
        train_transform / eval_transform: callables on a PIL RGB image.
        skip_bad_images: report unreadable files and go on instead of stopping.
        check_images: decode every file once at set-up to find bad ones before training.
        num_samples: a seeded sample (``seed``) of at most this many images of the folder, before the split.
    """

    def __init__(
        self,
        root: str,
        attributes_file: Optional[str] = "auto",
        partition_file: Optional[str] = "auto",
        attributes: Optional[Sequence[str] | str] = None,
        categories_file: Optional[str] = None,
        categories: Optional[Sequence[str] | dict[str, str]] = None,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 2,
        train_transform: Optional[Callable[[Any], Any]] = None,
        eval_transform: Optional[Callable[[Any], Any]] = None,
        skip_bad_images: bool = False,
        check_images: bool = True,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        pin_memory: bool = True,
        drop_last: bool = True,
        num_samples: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser()
        self.attributes_file, self.partition_file = attributes_file, partition_file
        if isinstance(attributes, str):
            if attributes != "all":
                raise ValueError(f"attributes must be a list of names or 'all', got {attributes!r}")
            attributes = None
        self.attributes = list(attributes) if attributes else None
        self.categories_file = categories_file
        self.category_columns: dict[str, str] = (
            dict(categories) if isinstance(categories, dict) else {c: c for c in (categories or [])}
        )
        if self.category_columns and not categories_file:
            raise ValueError("categories=... needs categories_file=<CSV with an image id column>")
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.skip_bad_images, self.check_images = skip_bad_images, check_images
        self.extensions = tuple(extensions)
        self.pin_memory, self.drop_last = pin_memory, drop_last
        self.num_samples = num_samples
        self.bad_images: list[tuple[str, str]] = []
        self.attribute_names: list[str] = []
        self.splits: dict[str, list[Path]] = {}
        self.labels: dict[str, Optional[torch.Tensor]] = {}
        self.categories: dict[str, list[str]] = {}  # name -> class names
        self.category_labels: dict[str, Optional[torch.Tensor]] = {}  # [N, len(categories)] class index
        self.datasets: dict[str, FaceImageDataset] = {}

    # ----------------------------------------------------------------------------- listing
    def _resolve(self, value: Optional[str], *default_names: str) -> Optional[Path]:
        if value is None:
            return None
        if value == "auto":
            return next((self.root / n for n in default_names if (self.root / n).exists()), None)
        path = Path(value).expanduser()
        path = path if path.is_absolute() else self.root / path
        if not path.exists():
            raise FileNotFoundError(f"data file {path} does not exist")
        return path

    def setup(self, stage: Optional[str] = None) -> None:
        if self.splits:
            return
        files = seeded_sample(list_images(self.root, self.extensions), self.num_samples, self.seed)
        if self.check_images:
            self.bad_images = find_bad_images(files, num_threads=max(self.num_workers, 2))
            if self.bad_images:
                if not self.skip_bad_images:
                    raise BadImagesError(self.bad_images)
                log.warning("skipping %d unreadable image(s) under %s (first: %s)", len(self.bad_images),
                            self.root, self.bad_images[0][0])
                bad = {p for p, _ in self.bad_images}
                files = [f for f in files if str(f) not in bad]
                if not files:
                    raise BadImagesError(self.bad_images)
        keys = [f.relative_to(self.root).as_posix() for f in files]

        labels: Optional[np.ndarray] = None
        attr_path = self._resolve(self.attributes_file, *AUTO_ATTRIBUTE_FILES)
        if attr_path is not None:
            table = read_attribute_table(attr_path)
            names = self.attributes or table.names
            missing = [n for n in names if n not in table.names]
            if missing:
                raise ValueError(f"{attr_path} has no attribute(s) {missing}; it has {table.names}")
            rows = [table.lookup(k) for k in keys]
            listed = [i for i, r in enumerate(rows) if r is not None]
            if len(listed) < len(files):
                log.warning("%d of %d images are not listed in %s and are left out",
                            len(files) - len(listed), len(files), attr_path)
            if not listed:
                raise ValueError(f"no image under {self.root} is listed in {attr_path} (names must match)")
            cols = [table.names.index(n) for n in names]
            labels = np.stack([table.values[rows[i]][cols] for i in listed]).astype(np.float32)
            files, keys = [files[i] for i in listed], [keys[i] for i in listed]
            self.attribute_names = list(names)

        categories: Optional[np.ndarray] = None
        if self.category_columns:
            categories, files, keys, labels = self._read_categories(files, keys, labels)

        assignment = self._assign_splits(keys)
        for split_id, split in enumerate(SPLITS):
            idx = np.flatnonzero(assignment == split_id)
            self.splits[split] = [files[i] for i in idx]
            self.labels[split] = torch.from_numpy(labels[idx]) if labels is not None else None
            self.category_labels[split] = torch.from_numpy(categories[idx]) if categories is not None else None
        if not self.splits["train"]:
            raise ValueError(f"the train split of {self.root} is empty")
        log.info("%s: %s images (train/val/test)", self.root,
                 "/".join(str(len(self.splits[s])) for s in SPLITS))
        for split in SPLITS:
            transform = self.train_transform if split == "train" else self.eval_transform
            self.datasets[split] = FaceImageDataset(
                self.splits[split], transform, self.labels[split], self.attribute_names,
                seed=self.seed, skip_bad_images=self.skip_bad_images,
            )

    def _read_categories(self, files: list[Path], keys: list[str], labels: Optional[np.ndarray]):
        """Categorical labels for the listed images; images the CSV does not list are left out."""
        path = self._resolve(self.categories_file)
        table = read_category_table(path, self.category_columns)
        rows = [table.lookup(k) for k in keys]
        listed = [i for i, r in enumerate(rows) if r is not None]
        if not listed:
            raise ValueError(f"no image under {self.root} is listed in {path} (names must match)")
        if len(listed) < len(files):
            log.warning("%d of %d images are not listed in %s and are left out", len(files) - len(listed),
                        len(files), path)
        self.categories = table.classes
        values = np.stack([table.values[rows[i]] for i in listed])
        labels = labels[listed] if labels is not None else None
        return values, [files[i] for i in listed], [keys[i] for i in listed], labels

    def _assign_splits(self, keys: list[str]) -> np.ndarray:
        part_path = self._resolve(self.partition_file, "list_eval_partition.txt")
        if part_path is not None:
            partition = read_partition_file(part_path)
            out = np.array([partition.get(k, partition.get(Path(k).name, -1)) for k in keys])
            if (out < 0).any():
                log.warning("%d images are not in %s; they go to the train split", int((out < 0).sum()), part_path)
                out[out < 0] = 0
            return out
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(keys))
        n_val, n_test = int(round(len(keys) * self.val_fraction)), int(round(len(keys) * self.test_fraction))
        out = np.zeros(len(keys), dtype=int)
        out[order[:n_val]] = 1
        out[order[n_val:n_val + n_test]] = 2
        return out

    # ----------------------------------------------------------------------------- loaders
    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        kwargs: dict[str, Any] = dict(
            batch_size=self.batch_size, num_workers=self.num_workers, pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=False,
        )
        batched = getattr(dataset.transform, "batched", None)
        if batched is not None:
            kwargs["collate_fn"] = batched.collate
        if train:
            sampler = SeededEpochSampler(dataset, shuffle=True, seed=self.seed, drop_last=False)
            sampler.set_epoch(self._epoch_to_run())
            if self.drop_last and len(dataset) // sampler.num_replicas < self.batch_size:
                raise ConfigError(
                    f"{self.root}: {len(dataset)} training images cannot fill one batch of {self.batch_size} per "
                    f"device; lower data.batch_size (at most {max(1, len(dataset) // sampler.num_replicas)})"
                )
            return DataLoader(dataset, sampler=sampler, drop_last=self.drop_last, **kwargs)
        return DataLoader(dataset, shuffle=False, drop_last=False, **kwargs)

    def _epoch_to_run(self) -> int:
        """The epoch the fit loop will run next. Workers take their first indices when the loader's iterator
        is made, which on resume happens before Lightning's ``set_epoch``; Lightning's own value for that
        call is the loop's processed-epoch count, already restored from the checkpoint here."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        progress = getattr(getattr(trainer, "fit_loop", None), "epoch_progress", None)
        return int(progress.current.processed) if progress is not None else int(trainer.current_epoch)

    # ----------------------------------------------------------------------------- batched multi-crop
    def _batched_transform(self, batch: Any):
        batched = getattr(self.train_transform, "batched", None)
        return batched if batched is not None and isinstance(batch, dict) and "aug" in batch else None

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``device=cpu``: render the planned crops here, in the main process; ``decode=device``: decode the
        JPEG bytes straight onto the training device (the transfer then leaves them there)."""
        batched = self._batched_transform(batch)
        if batched is None:
            return batch
        if batched.device == "cpu":
            return self._rendered(batch, batched.render(batch, torch.device("cpu")))
        target = self._training_device()
        if batched.device == "cuda" and target.type != "cuda":
            raise ValueError(f"data.train_transform.device=cuda but the trainer runs on {target}; use "
                             "device=accelerator (whatever the trainer uses), cpu, or loader")
        if batched.decode == "device":
            batch = dict(batch, source=batched.decode_sources(batch, target),
                         source_is_jpeg=[False] * len(batch["source"]))
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``device=cuda|accelerator``: render the planned crops on the device the batch is now on."""
        batched = self._batched_transform(batch)
        if batched is None:
            return batch
        return self._rendered(batch, batched.render(batch))  # on the device the images are now on

    @staticmethod
    def _rendered(batch: dict[str, Any], crops: list[torch.Tensor]) -> dict[str, Any]:
        out = {k: v for k, v in batch.items() if k not in ("source", "source_is_jpeg", "aug", "path")}
        out["crops"] = crops
        return out

    def _training_device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)


class SampleFacesDataModule(FaceImageDataModule):
    """The embedded default: the procedurally drawn face set, generated once into ``root``."""

    def __init__(self, root: str, num_images: int = 3000, image_size: int = 64, generator_seed: int = 0,
                 background: str = "plain", **kwargs: Any) -> None:
        super().__init__(root=root, **kwargs)
        self.num_images, self.image_size, self.generator_seed = num_images, image_size, generator_seed
        self.background = background

    def prepare_data(self) -> None:
        generate_sample_faces(self.root, self.num_images, self.image_size, self.generator_seed,
                              background=self.background)

    def setup(self, stage: Optional[str] = None) -> None:
        if not (self.root / "facefd_sample.json").exists():  # setup() without prepare_data() (scripts, tests)
            self.prepare_data()
        super().setup(stage)
