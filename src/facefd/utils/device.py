"""The device a task runs on when the config says ``auto``."""
from __future__ import annotations

from typing import Optional

import torch

from facefd.utils.errors import ConfigError


def resolve_device(device: Optional[str | torch.device] = "auto") -> torch.device:
    """``auto`` (or None): the first CUDA GPU when there is one, else the CPU; anything else as given."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device {device!r} is not a device torch knows (auto, cpu, cuda, cuda:1, ...)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but this machine has no usable CUDA GPU; use cpu or auto")
    return resolved
