"""Image sets of the evaluation tasks: folders (capped, checked), a reference split into a reference
part and a held-out part, and perturbed copies; their features through the on-disk feature cache."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from facefd.data.images import drop_bad_images, list_images, seeded_sample
from facefd.evaluation.perturbations import describe, seeded
from facefd.models.probe.features import FeatureCache


@dataclass
class ImageSet:
    name: str
    paths: list[Path]
    kind: str = "folder"               # folder | heldout | perturbed | reference
    perturbation: Optional[Any] = None  # callable(image, generator) applied on the fly
    seed: int = 0


def sample(paths: Sequence[Path], num: Optional[int], seed: int) -> list[Path]:
    """At most ``num`` paths, a seeded uniform sample (kept in sorted order): :func:`facefd.data.images.seeded_sample`."""
    return seeded_sample(paths, num, seed)


def folder_sample(root: str | Path, num: Optional[int] = None, seed: int = 0,
                  skip_bad_images: bool = False) -> list[Path]:
    """At most ``num`` images of a folder (seeded sample), checked for readability; only the sampled
    files are decoded, so a 100k folder sampled to 5k checks 5k."""
    return drop_bad_images(sample(list_images(root), num, seed), skip_bad_images)


def split_reference(paths: Sequence[Path], num_samples: Optional[int], seed: int) -> tuple[list[Path], list[Path]]:
    """A seeded split of the reference folder: ``num_samples`` reference images and up to as many
    held-out ones (half and half when the folder is smaller than 2 x num_samples)."""
    order = np.random.default_rng(seed).permutation(len(paths))
    n_ref = min(num_samples or len(paths) // 2, len(paths) // 2)
    if n_ref < 2:
        raise ValueError(f"the reference folder has {len(paths)} images: too few to split into reference and held-out")
    ref = sorted(paths[i] for i in order[:n_ref])
    held = sorted(paths[i] for i in order[n_ref:2 * n_ref])
    return ref, held


def parse_set_entry(entry: str) -> tuple[str, str]:
    """``NAME@DIR`` or ``DIR`` (named after the folder)."""
    name, sep, root = entry.partition("@")
    return (name, root) if sep else (Path(entry).name, entry)


def set_features(extractor: nn.Module, image_set: ImageSet, cache: FeatureCache, **extract_kwargs) -> torch.Tensor:
    """Features of a set, cached; a perturbed set's cache key includes the perturbation and its seed."""
    if image_set.perturbation is None:
        return cache.get(extractor, image_set.paths, name=image_set.name, **extract_kwargs)
    variant = f"{describe(image_set.perturbation)}:seed={image_set.seed}"
    return cache.get(extractor, image_set.paths, name=image_set.name, variant=variant,
                     transform=seeded(image_set.perturbation, image_set.seed), **extract_kwargs)
