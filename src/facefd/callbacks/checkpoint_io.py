"""Checkpoints written whole or not at all: Lightning's ``TorchCheckpointIO`` opens the target and writes
into it, so a full disk leaves a truncated ``.ckpt`` that no ``torch.load`` reads. Here a local checkpoint
goes to a temporary file beside the target and is renamed over it only when complete."""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with atomic local writes (remote URLs go through Lightning's own path).

    Example:
        >>> import lightning.pytorch as pl
        >>> from facefd.callbacks.checkpoint_io import AtomicCheckpointIO
        >>> trainer = pl.Trainer(plugins=[AtomicCheckpointIO()], logger=False, enable_progress_bar=False)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        """Serialise in memory, write a temporary file in the target's folder, fsync, rename.

        Raises:
            OSError: the disk is full or not writable; the previous checkpoint at ``path`` is untouched
                and no partial file is left.
        """
        if "://" in str(path) and not str(path).startswith("file://"):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError("storage_options are not supported by AtomicCheckpointIO")
        target = Path(str(path).removeprefix("file://"))
        target.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(buffer.getbuffer())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
