"""Checkpoints are data: every road that reads one (resume, ``load_from_checkpoint``, export) unpickles
with ``weights_only=True``, whatever the installed torch's default, and refuses anything else in one line."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import IO, Any, Optional

from facefd.utils.errors import UserError


class CheckpointError(UserError, ValueError):
    """A checkpoint that holds objects a ``weights_only`` load refuses (code, or classes outside torch's
    allow-list)."""


def refused(path: Any, exc: BaseException) -> CheckpointError:
    """The one-line error for a checkpoint ``torch.load(weights_only=True)`` refused."""
    first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return CheckpointError(f"{path}: refused; a checkpoint is read as data (weights_only=True) and this one holds "
                           f"more than tensors and plain values ({first})")


class DataOnlyCheckpoints:
    """Mixin for LightningModules: ``load_from_checkpoint`` always reads with ``weights_only=True``."""

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path | IO, *args: Any, weights_only: Optional[bool] = None,
                             **kwargs: Any) -> Any:
        """Lightning's ``load_from_checkpoint`` (local path or URL) with ``weights_only=True``.

        Raises:
            CheckpointError: ``weights_only=False`` was asked for, or the file holds more than data.
        """
        if weights_only is False:
            raise CheckpointError(f"{checkpoint_path}: weights_only=False is not offered: checkpoints are read as data")
        try:
            return super().load_from_checkpoint(checkpoint_path, *args, weights_only=True, **kwargs)  # type: ignore[misc]
        except pickle.UnpicklingError as exc:
            raise refused(checkpoint_path, exc) from None
