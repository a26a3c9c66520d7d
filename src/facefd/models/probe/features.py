"""Frozen features of image files, extracted once and cached on disk.

The cache key hashes everything the features depend on: the extractor's fingerprint (its weights),
its input size, the feature pipeline version, and the file listing with each file's size and
modification time. Any change gives a new key, so a stale cache is never reused; the stored key is
checked again on load.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import weakref
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from safetensors.torch import load, save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from facefd.data.tensors import ImageTensors, IndexedTransform, by_size, collate_images
from facefd.models.extractor import module_fingerprint
from facefd.utils.device import resolve_device
from facefd.utils.files import atomic_path

log = logging.getLogger(__name__)

#: Version of :func:`extract_features` (loading, resizing, batching); part of every cache key.
FEATURE_PIPELINE_VERSION = 1


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors byte string (8-byte little-endian header length, JSON header)."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size]).get("__metadata__", {})


def listing_fingerprint(paths: Sequence[Path]) -> str:
    """Hash of the ordered file list with sizes and mtimes: a replaced or touched file changes it."""
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{Path(p).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def input_size_of(extractor: nn.Module, image_size: Optional[int] = None) -> Optional[int]:
    return image_size or getattr(extractor, "input_size", None)


@torch.no_grad()
def extract_features(extractor: nn.Module, paths: Sequence[Path], batch_size: int = 64, num_workers: int = 2,
                     device: Optional[str | torch.device] = "auto", image_size: Optional[int] = None,
                     desc: str = "features", transform: Optional[IndexedTransform] = None, devices: int = 1,
                     accelerator: str = "auto", strategy: str = "auto", num_nodes: int = 1,
                     sink: Optional[Callable[[torch.Tensor], None]] = None) -> torch.Tensor:
    """``[N, D]`` float32 features of image files (float [0, 1] input resized to the extractor's input size):
    the one road from files to features of every evaluation task and of ``facefd score``.

    Args:
        extractor: the frozen network.
        paths: the image files, in the order of the rows.
        batch_size: images per forward pass (per process).
        num_workers: data loader workers (per process).
        device: ``auto``, ``cpu``, ``cuda``... (one process).
        image_size: needed only for a plain ``nn.Module`` without an ``input_size`` attribute.
        desc: the progress bar's label.
        transform: ``transform(image, index)`` alters each image first (benchmark perturbations).
        devices: more than 1: that many processes through Lightning
            (:func:`facefd.models.distributed_extraction.extract_features_distributed`).
        accelerator: with ``devices > 1``: ``gpu``, ``cpu`` or ``auto`` (from ``device``).
        strategy: with ``devices > 1``: ``auto``, ``ddp`` or ``ddp_spawn`` (spawned from this process).
        num_nodes: 1.
        sink: stream the features instead: ``sink(rows)`` gets each batch's rows in order, and nothing is
            kept (memory stays that of one batch in one process).

    Returns:
        The features, row ``i`` for ``paths[i]`` (with ``sink``: an empty ``[0, D]`` tensor).

    Example:
        >>> feats = extract_features(extractor, sorted(Path("faces").glob("*.png")), devices=2)  # doctest: +SKIP
    """
    if int(devices) > 1 or int(num_nodes) > 1:
        from facefd.models.distributed_extraction import extract_features_distributed

        if accelerator == "auto" and device not in (None, "auto"):
            accelerator = "cpu" if torch.device(device).type == "cpu" else "gpu"
        feats = extract_features_distributed(extractor, paths, int(devices), accelerator, batch_size, num_workers,
                                             input_size_of(extractor, image_size), transform, desc, strategy,
                                             int(num_nodes))
        if sink is None:
            return feats
        for start in range(0, len(feats), batch_size):
            sink(feats[start:start + batch_size])
        return feats[:0]
    if accelerator == "cpu" and device in (None, "auto"):
        device = "cpu"
    dev = resolve_device(device)
    extractor = extractor.to(dev).eval()
    loader = DataLoader(ImageTensors(paths, input_size_of(extractor, image_size), transform), batch_size=batch_size,
                        num_workers=num_workers, pin_memory=dev.type == "cuda", collate_fn=collate_images)
    out = []
    for batch in tqdm(loader, desc=desc, leave=False):
        feats = by_size(batch, lambda x: extractor(x.to(dev, non_blocking=True)))  # mixed sizes: per size
        rows = feats.reshape(feats.shape[0], -1).float()
        if sink is not None:
            sink(rows)
            out = [rows[:0].cpu()]
        else:
            out.append(rows.cpu())
    if not out:
        raise ValueError(f"no images to extract features from ({desc})")
    return torch.cat(out)


class FeatureCache:
    """``cache_dir/<key>.safetensors``: one file of features per (extractor, file listing)."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir).expanduser()
        # an extractor without a ``fingerprint`` attribute is hashed weight by weight: once per module
        # (extractors are frozen), not on every lookup
        self._fingerprints: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()

    def fingerprint(self, extractor: nn.Module) -> str:
        if extractor not in self._fingerprints:
            self._fingerprints[extractor] = module_fingerprint(extractor)
        return self._fingerprints[extractor]

    def key(self, extractor: nn.Module, paths: Sequence[Path], image_size: Optional[int] = None,
            variant: str = "") -> str:
        """``variant`` names anything else the features depend on (a perturbation and its settings)."""
        spec = {"extractor": self.fingerprint(extractor), "input_size": input_size_of(extractor, image_size),
                "pipeline": FEATURE_PIPELINE_VERSION, "files": listing_fingerprint(paths), "count": len(paths)}
        if variant:
            spec["variant"] = variant
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.cache_dir / f"{key}.safetensors"

    def load(self, key: str, count: int) -> Optional[torch.Tensor]:
        path = self.path(key)
        if not path.exists():
            return None
        try:  # read into memory, not mmap: a cache file replaced or truncated later must not reach our tensors
            data = path.read_bytes()
            meta = _safetensors_metadata(data)
            feats = load(data)["features"]
        except Exception as exc:  # noqa: BLE001 - a broken cache file is recomputed, not fatal
            log.warning("feature cache %s is unreadable (%s); recomputing", path, exc)
            return None
        if meta.get("key") != key or feats.shape[0] != count:
            log.warning("feature cache %s does not match its key; recomputing", path)
            return None
        return feats

    def save(self, key: str, features: torch.Tensor, description: str = "") -> Path:
        path = self.path(key)
        with atomic_path(path) as tmp:  # readers see the old file or the whole new one
            save_file({"features": features.contiguous()}, str(tmp), metadata={"key": key, "description": description})
        return path

    def ensure(self, extractor: nn.Module, paths: Sequence[Path], name: str = "features",
               image_size: Optional[int] = None, variant: str = "", **extract_kwargs) -> Path:
        """Extract and cache the features of ``paths`` unless a cache file for them exists (nothing is loaded)."""
        key = self.key(extractor, paths, image_size, variant)
        if not self.path(key).exists():
            feats = extract_features(extractor, paths, image_size=image_size, desc=name, **extract_kwargs)
            self.save(key, feats, description=name)
            log.info("%s: extracted %d features, cached in %s", name, len(paths), self.path(key))
        return self.path(key)

    def get(self, extractor: nn.Module, paths: Sequence[Path], name: str = "features",
            image_size: Optional[int] = None, variant: str = "", **extract_kwargs) -> torch.Tensor:
        """Cached features of ``paths``, extracting (and caching) them when the cache has none."""
        key = self.key(extractor, paths, image_size, variant)
        feats = self.load(key, len(paths))
        if feats is not None:
            log.info("%s: %d cached features from %s", name, len(paths), self.path(key))
            return feats
        feats = extract_features(extractor, paths, image_size=image_size, desc=name, **extract_kwargs)
        self.save(key, feats, description=name)
        log.info("%s: extracted %d features, cached in %s", name, len(paths), self.path(key))
        return feats
