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

    def save(self, path: str | Path) -> Path:
        """Write atomically: a crash never leaves a half-written statistics file."""
        path = Path(path)
        meta = {"format": STATS_FORMAT, "version": STATS_VERSION, "fingerprint": self.fingerprint,
                "count": int(self.count), **self.metadata}
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, mean=self.mean.detach().cpu().double().numpy(), cov=self.cov.detach().cpu().double().numpy(),
                     count=np.int64(self.count), metadata=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "GaussianStats":
        path = Path(path)
        if not path.exists():
            raise StatisticsFileError(f"statistics file {path} does not exist "
                                      "(make one with `python evaluate.py task=stats data.root=DIR out=FILE.npz`)")
        try:
            with np.load(path, allow_pickle=False) as data:
                mean, cov, count = data["mean"], data["cov"], int(data["count"])
                meta = json.loads(str(data["metadata"])) if "metadata" in data else {}
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise StatisticsFileError(f"{path} is not a readable facefd statistics file (truncated or corrupt?): "
                                      f"{type(exc).__name__}: {exc}") from exc
        d = mean.shape[0]
        if mean.ndim != 1 or cov.shape != (d, d):
            raise StatisticsFileError(f"{path}: mean {mean.shape} and covariance {cov.shape} do not match")
        if count < 2:
            raise StatisticsFileError(f"{path}: statistics of {count} sample(s); at least 2 are needed")
        return cls(torch.from_numpy(mean), torch.from_numpy(cov), count, meta.get("fingerprint", ""), meta)
