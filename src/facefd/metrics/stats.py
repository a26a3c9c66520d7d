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
            with np.load(path, allow_pickle=False) as data:
                keys = set(data.files)
                meta = json.loads(str(data["metadata"])) if "metadata" in keys else {}
                if {"mean", "cov"} <= keys:
                    mean, cov, count = data["mean"], data["cov"], int(data["count"])
                elif {"mu", "sigma"} <= keys:
                    mean, cov = data["mu"], data["sigma"]
                    count = int(data["count"]) if "count" in keys else int(meta.get("count", 0))
                else:
                    raise StatisticsFileError(f"{path} holds {sorted(keys)}: neither facefd's mean/cov nor "
                                              "pytorch-fid/clean-fid's mu/sigma")
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
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
        if count and count < 2:
            raise StatisticsFileError(f"{path}: statistics of {count} sample(s); at least 2 are needed")
        return cls(torch.from_numpy(np.asarray(mean, dtype=np.float64)), torch.from_numpy(np.asarray(cov, dtype=np.float64)),
                   count, fingerprint, meta)
