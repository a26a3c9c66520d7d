"""Logger factories with safe defaults."""
from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any


def _wandb_key_available() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(Path.home() / ".netrc").authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(offline: bool | None = None, **kwargs: Any):
    """A ``WandbLogger`` that never prompts: offline unless an API key is configured."""
    try:
        import wandb  # noqa: F401
    except ImportError as exc:
        raise ImportError('logger=wandb needs the wandb package: pip install -e ".[wandb]"') from exc
    from lightning.pytorch.loggers import WandbLogger

    if offline is None:
        offline = not _wandb_key_available()
    if offline:
        os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    return WandbLogger(offline=offline, **kwargs)
