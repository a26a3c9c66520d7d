"""Gaussian feature statistics (mean, covariance, count) and their ``.npz`` files."""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facefd.utils.errors import UserError
from facefd.utils.files import atomic_path

STATS_FORMAT = "facefd-stats"
STATS_VERSION = 1


#: ``GaussianStats.save`` formats: facefd's own (``mean``/``cov``) and pytorch-fid / clean-fid's (``mu``/``sigma``).
STATS_FORMATS = ("facefd", "pytorch-fid")


class StatisticsFileError(UserError, ValueError):
    """A missing, malformed or mismatching statistics file."""


#: The widest features a statistics file may hold (a 16384-d covariance is 2 GiB in float64).
MAX_FEATURES = 16384
#: The largest metadata string.
MAX_METADATA_BYTES = 1 << 20


def npz_members(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each member's declared shape and dtype, read from the ``.npy`` headers alone, after checking that
    its stored size is exactly what the header declares: a small file that would decompress into
    gigabytes, or a member with object (pickled) data, is refused before anything is read into memory.

    Raises:
        StatisticsFileError: naming the file and the member.
    """
    members = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            with archive.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(fh)
                header = fh.tell()
            if dtype.hasobject:
                raise StatisticsFileError(f"{path}: member {name!r} holds Python objects; statistics are numbers")
            declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if info.file_size != header + declared:
                raise StatisticsFileError(f"{path}: member {name!r} declares {shape} {dtype} ({declared} bytes) but "
                                          f"stores {info.file_size - header}")
            members[name] = (tuple(int(s) for s in shape), dtype)
    return members


def check_statistics_members(path: Path, members: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """The shapes a statistics file must have, from the headers: a mean vector, a square covariance of
    its width (at most :data:`MAX_FEATURES`), a scalar count, a metadata string."""
    mean_key, cov_key = ("mean", "cov") if "mean" in members else ("mu", "sigma")
    if mean_key not in members or cov_key not in members:
        raise StatisticsFileError(f"{path} holds {sorted(members)}: neither facefd's mean/cov nor "
                                  "pytorch-fid/clean-fid's mu/sigma")
    (mean_shape, mean_dtype), (cov_shape, cov_dtype) = members[mean_key], members[cov_key]
    if len(mean_shape) != 1 or not 1 <= mean_shape[0] <= MAX_FEATURES:
        raise StatisticsFileError(f"{path}: {mean_key} has shape {mean_shape}; a vector of 1 to {MAX_FEATURES} "
                                  "features is expected")
    if cov_shape != (mean_shape[0], mean_shape[0]):
        raise StatisticsFileError(f"{path}: {cov_key} has shape {cov_shape}; ({mean_shape[0]}, {mean_shape[0]}) "
                                  f"is expected for a {mean_shape[0]}-d {mean_key}")
    for key, dtype in ((mean_key, mean_dtype), (cov_key, cov_dtype)):
        if dtype.kind not in "fi":
            raise StatisticsFileError(f"{path}: {key} holds {dtype}, not numbers")
    if "count" in members and (members["count"][0] != () or members["count"][1].kind not in "iu"):
        raise StatisticsFileError(f"{path}: count has shape {members['count'][0]} and type {members['count'][1]}; "
                                  "one integer is expected")
    if "metadata" in members:
        shape, dtype = members["metadata"]
        if shape != () or dtype.kind not in "US" or dtype.itemsize > MAX_METADATA_BYTES:
            raise StatisticsFileError(f"{path}: metadata has shape {shape} and type {dtype}; one JSON string is expected")


@dataclass
class GaussianStats:
    """Mean and (unbiased) covariance of ``count`` feature vectors, with the extractor's fingerprint."""

    mean: torch.Tensor
    cov: torch.Tensor
    count: int
    fingerprint: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path, format: str = "facefd") -> Path:
        """Write atomically: a crash never leaves a half-written statistics file.

        ``format="pytorch-fid"`` writes ``mu`` and ``sigma`` as pytorch-fid and clean-fid read them, with
        facefd's fingerprint, count and metadata kept alongside (those tools ignore extra keys).
        """
        if format not in STATS_FORMATS:
            raise ValueError(f"format must be one of {STATS_FORMATS}, got {format!r}")
        path = Path(path)
        meta = {"format": STATS_FORMAT, "version": STATS_VERSION, "fingerprint": self.fingerprint,
                "count": int(self.count), **self.metadata}
        mean, cov = self.mean.detach().cpu().double().numpy(), self.cov.detach().cpu().double().numpy()
        arrays = {"mean": mean, "cov": cov} if format == "facefd" else {"mu": mean, "sigma": cov}
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays, count=np.int64(self.count), metadata=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path: str | Path, extractor: Any = None) -> "GaussianStats":
        """A facefd ``.npz`` (``mean``, ``cov``), or a pytorch-fid / clean-fid one (``mu``, ``sigma``).

        Files of the other tools carry no extractor fingerprint: pass ``extractor`` (the extractor or
        metric they were made with, or its fingerprint) to state where they came from; without it they
        are refused with a message that says so.
        """
        path = Path(path)
        if not path.exists():
            raise StatisticsFileError(f"statistics file {path} does not exist "
                                      "(make one with `python evaluate.py task=stats data.root=DIR out=FILE.npz`)")
        try:
            check_statistics_members(path, npz_members(path))  # from the headers, before any array is read
            with np.load(path, allow_pickle=False) as data:
                keys = set(data.files)
                meta = json.loads(str(data["metadata"])) if "metadata" in keys else {}
                if not isinstance(meta, dict):
                    raise StatisticsFileError(f"{path}: metadata is JSON {type(meta).__name__}, not an object")
                if {"mean", "cov"} <= keys:
                    mean, cov, count = data["mean"], data["cov"], int(data["count"])
                elif {"mu", "sigma"} <= keys:
                    mean, cov = data["mu"], data["sigma"]
                    count = int(data["count"]) if "count" in keys else int(meta.get("count", 0))
                else:
                    raise StatisticsFileError(f"{path} holds {sorted(keys)}: neither facefd's mean/cov nor "
                                              "pytorch-fid/clean-fid's mu/sigma")
        except (KeyError, ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile) as exc:
            if isinstance(exc, StatisticsFileError):
                raise
            raise StatisticsFileError(f"{path} is not a readable facefd statistics file (truncated or corrupt?): "
                                      f"{type(exc).__name__}: {exc}") from exc
        fingerprint = meta.get("fingerprint", "")
        if not fingerprint:
            if extractor is None:
                raise StatisticsFileError(
                    f"{path} has no facefd extractor fingerprint (a pytorch-fid / clean-fid file?): state the "
                    "extractor it was made with -- `facefd fd ... --assume-extractor`, "
                    "`metric.load_reference(path, assume_extractor=True)` or "
                    "`GaussianStats.load(path, extractor=...)` -- and make sure the preprocessing matches (docs/migrating.md)")
            fingerprint = extractor if isinstance(extractor, str) else str(getattr(extractor, "fingerprint", ""))
            meta = {**meta, "assumed_extractor": True}
        d = mean.shape[0]
        if mean.ndim != 1 or cov.shape != (d, d):
            raise StatisticsFileError(f"{path}: mean {mean.shape} and covariance {cov.shape} do not match")
        for key, values in (("mean", mean), ("covariance", cov)):
            if not np.isfinite(values).all():
                raise StatisticsFileError(f"{path}: the {key} holds NaN or infinite values")
        if count and count < 2:
            raise StatisticsFileError(f"{path}: statistics of {count} sample(s); at least 2 are needed")
        return cls(torch.from_numpy(np.asarray(mean, dtype=np.float64)), torch.from_numpy(np.asarray(cov, dtype=np.float64)),
                   count, fingerprint, meta)
