"""Weights files read as data: a ``.safetensors`` file, or a ``.pth``/``.pt`` state dict unpickled with
``weights_only=True``; anything else is refused in one line naming the file."""
from __future__ import annotations

from pathlib import Path

import torch

from facefd.utils.errors import UserError


class WeightsFileError(UserError, ValueError):
    """A weights file that is not a plain state dict, or that claims a standard name with another hash."""


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``path``: safetensors, or a pickle loaded with ``weights_only=True`` (no code from the
    file runs), checked to be a flat mapping of names to tensors.

    Args:
        path: a ``.safetensors``, ``.pth`` or ``.pt`` file.

    Returns:
        ``{name: tensor}`` on the CPU.

    Raises:
        WeightsFileError: anything else, in one line naming the file.

    Example:
        >>> import torch, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "w.pth")
        >>> torch.save({"weight": torch.ones(2)}, path)
        >>> load_state_dict_file(path)["weight"]
        tensor([1., 1.])
    """
    try:
        if Path(path).suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unpickling refusal, a truncated zip, ...: all the same to the user
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise WeightsFileError(f"{path} is not a plain weights file (refused by weights_only loading: {first})") from None
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise WeightsFileError(f"{path} is not a state dict of named tensors")
    return state
