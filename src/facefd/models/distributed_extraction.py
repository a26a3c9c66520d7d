"""Features of image files in several processes (GPUs, or CPU processes), through Lightning's predict loop.

Lightning shards the files across processes (its distributed sampler for prediction gives every file to
exactly one process); each process writes its rows with their indices to a shard file; the calling
process puts the rows back in file order. The processes are spawned from the calling one (``ddp_spawn``),
so the rest of a command — loading, scoring, printing — runs once.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from lightning.pytorch import LightningModule
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

from facefd.data.tensors import ImageBatch, ImageTensors, IndexedTransform, by_size, collate_images
from facefd.utils.errors import ConfigError

#: Strategies :func:`extract_features_distributed` accepts: the processes are always spawned from the caller.
SPAWNING_STRATEGIES = ("auto", "ddp", "ddp_spawn")


class IndexedImages(Dataset):
    """``(index, image)`` pairs of :class:`ImageTensors`: the index travels with the image across processes."""

    def __init__(self, images: ImageTensors) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        return i, self.images[i]


def collate_indexed(items: Sequence[tuple[int, torch.Tensor]]) -> tuple[torch.Tensor, ImageBatch]:
    """Indices as a tensor, images as :func:`collate_images` batches them."""
    return torch.tensor([i for i, _ in items], dtype=torch.long), collate_images([x for _, x in items])


class FeatureExtraction(LightningModule):
    """Runs a frozen extractor in ``predict_step``; each process saves its rows and their indices.

    Args:
        extractor: the frozen network.
        shard_dir: where each process writes ``rank<N>.safetensors``.
    """

    def __init__(self, extractor: nn.Module, shard_dir: str) -> None:
        super().__init__()
        self.extractor, self.shard_dir = extractor, shard_dir
        self._indices: list[torch.Tensor] = []
        self._rows: list[torch.Tensor] = []

    def predict_step(self, batch: tuple[torch.Tensor, ImageBatch], batch_idx: int) -> torch.Tensor:
        index, images = batch
        feats = by_size(images, self.extractor)
        self._indices.append(index.cpu())
        self._rows.append(feats.reshape(feats.shape[0], -1).float().cpu())
        return index  # the rows travel through the shard files, not the predictions

    def on_predict_epoch_end(self) -> None:
        rows = torch.cat(self._rows) if self._rows else torch.zeros(0, 0)
        index = torch.cat(self._indices) if self._indices else torch.zeros(0, dtype=torch.long)
        save_file({"index": index.contiguous(), "features": rows.contiguous()},
                  str(Path(self.shard_dir) / f"rank{self.global_rank}.safetensors"))


def check_parallel_options(devices: int, num_nodes: int = 1, strategy: str = "auto") -> None:
    """Refuse what extraction cannot do, before any model loads.

    Raises:
        ConfigError: fewer than 1 device, several nodes, or a strategy that is not a spawning DDP one.
    """
    if int(devices) < 1:
        raise ConfigError(f"devices={devices}: give 1 or more processes")
    if int(num_nodes) != 1:
        raise ConfigError(f"num_nodes={num_nodes}: feature extraction spawns its processes on this machine; "
                          "run one command per node on a part of the folder instead")
    if strategy not in SPAWNING_STRATEGIES:
        raise ConfigError(f"strategy={strategy!r}: feature extraction runs through {' or '.join(SPAWNING_STRATEGIES)} "
                          "(its processes are spawned from the command)")


def extract_features_distributed(extractor: nn.Module, paths: Sequence[Path], devices: int, accelerator: str = "auto",
                                 batch_size: int = 64, num_workers: int = 2, image_size: Optional[int] = None,
                                 transform: Optional[IndexedTransform] = None, desc: str = "features",
                                 strategy: str = "auto", num_nodes: int = 1) -> torch.Tensor:
    """``[N, D]`` float32 features of image files from ``devices`` processes, in file order.

    Args:
        extractor: the frozen network (pickled to each process: it must not hold lambdas).
        paths: the image files.
        devices: number of processes (GPUs, or CPU processes with ``accelerator="cpu"``).
        accelerator: ``auto`` (GPUs when there are any), ``gpu`` or ``cpu``.
        batch_size: images per forward pass in each process.
        num_workers: data loader workers per process.
        image_size: the side images are resized to (the extractor's ``input_size`` when it has one).
        transform: ``transform(image, index)`` before the resize (a picklable callable).
        desc: the progress bar's label.
        strategy: ``auto``, ``ddp`` or ``ddp_spawn``: all spawn the processes from this one.
        num_nodes: 1 (one machine).

    Returns:
        The features, row ``i`` for ``paths[i]``, equal to one process's up to the batch composition.

    Example:
        >>> feats = extract_features_distributed(extractor, files, devices=2, accelerator="cpu")  # doctest: +SKIP
    """
    from lightning.pytorch import Trainer

    check_parallel_options(devices, num_nodes, strategy)
    size = image_size or getattr(extractor, "input_size", None)
    loader = DataLoader(IndexedImages(ImageTensors(paths, size, transform)), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=collate_indexed)
    with tempfile.TemporaryDirectory(prefix="facefd-shards-") as shard_dir:
        module = FeatureExtraction(extractor.eval(), shard_dir)
        trainer = Trainer(accelerator=accelerator, devices=int(devices), num_nodes=1, strategy="ddp_spawn",
                          precision="32-true", logger=False, enable_checkpointing=False, enable_model_summary=False,
                          enable_progress_bar=True, inference_mode=True)
        print(f"{desc}: {len(paths)} images on {devices} processes")
        trainer.predict(module, dataloaders=loader, return_predictions=False)
        return gather_shards(Path(shard_dir), len(paths))


def gather_shards(shard_dir: Path, count: int) -> torch.Tensor:
    """The rows of every ``rank*.safetensors`` shard, in index order; every index exactly once.

    Raises:
        RuntimeError: a row missing or given twice (a sampler that duplicated or dropped files).
    """
    shards = [load_file(str(p)) for p in sorted(shard_dir.glob("rank*.safetensors"))]
    width = max((s["features"].shape[1] for s in shards if s["features"].numel()), default=0)
    out = torch.empty(count, width)
    seen = torch.zeros(count, dtype=torch.long)
    for shard in shards:
        if shard["index"].numel():
            out[shard["index"]] = shard["features"]
            seen.index_add_(0, shard["index"], torch.ones_like(shard["index"]))
    if not bool((seen == 1).all()):
        raise RuntimeError(f"the processes returned {int(seen.sum())} rows for {count} files "
                           f"({int((seen == 0).sum())} missing, {int((seen > 1).sum())} twice)")
    return out


def parallel_options(trainer: Any) -> dict[str, Any]:
    """``devices``, ``accelerator``, ``strategy`` and ``num_nodes`` of a ``trainer`` config (``trainer=ddp_sim``)."""
    get = (lambda k, d: trainer.get(k, d)) if hasattr(trainer, "get") else (lambda k, d: d)
    accelerator = str(get("accelerator", "auto"))
    devices = get("devices", 1)
    if devices in ("auto", -1, "-1"):  # Lightning's "every GPU"
        devices = torch.cuda.device_count() if accelerator != "cpu" and torch.cuda.is_available() else 1
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if isinstance(devices, int):
        count = devices
    elif not isinstance(devices, str) and hasattr(devices, "__len__"):  # a list of GPU ids: that many processes
        count = len(devices)
    else:
        raise ConfigError(f"trainer.devices={devices!r}: give a number of processes")
    return {"devices": max(count, 1), "accelerator": accelerator,
            "strategy": str(get("strategy", "auto")), "num_nodes": int(get("num_nodes", 1) or 1)}
