"""The device a task runs on when the config says ``auto``."""
from __future__ import annotations

from typing import Optional

import torch


def resolve_device(device: Optional[str | torch.device] = "auto") -> torch.device:
    """``auto`` (or None): the first CUDA GPU when there is one, else the CPU; anything else as given."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
