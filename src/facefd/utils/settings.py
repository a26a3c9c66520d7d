"""Process-wide settings that every app (train, evaluate, anonymize, the ``facefd`` command) applies
before its job: the image pixel limit, what transparency becomes, and whether files may name code.

They live in the bottom layer so that the entry points can set them without importing the data or model
packages; :mod:`facefd.data.images` and :mod:`facefd.models.backbone` read them.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, Optional

#: Pillow's own decompression-bomb threshold (about 9459 x 9459): bigger images are refused unread.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
_max_image_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS

#: What transparency becomes: ``drop`` keeps the colour under it (pytorch-fid's and clean-fid's
#: ``convert("RGB")``, so statistics are comparable), ``white`` composites on white.
ALPHA_MODES = ("drop", "white")
_alpha_mode = "drop"

_TRUST_CODE: ContextVar[bool] = ContextVar("facefd_trust_code", default=False)


def set_max_image_pixels(limit: Optional[int]) -> None:
    """Set the one pixel limit of training, evaluation and anonymization.

    Set it before data loaders start: forked workers inherit it.

    Args:
        limit: the largest number of pixels an image may have (``max_image_pixels=`` on the command
            line); ``None`` or 0 removes the limit.
    """
    global _max_image_pixels
    from PIL import Image

    _max_image_pixels = int(limit) if limit else None
    Image.MAX_IMAGE_PIXELS = _max_image_pixels  # Pillow then neither warns below it nor refuses above ours


def max_image_pixels() -> Optional[int]:
    """The pixel limit in force (``None``: no limit)."""
    return _max_image_pixels


def set_alpha_mode(mode: str) -> None:
    """Set the one transparency convention of training, evaluation and anonymization.

    Args:
        mode: ``drop`` (keep the colour under the transparency) or ``white`` (composite on white).

    Raises:
        ValueError: for any other mode.
    """
    global _alpha_mode
    if mode not in ALPHA_MODES:
        raise ValueError(f"alpha must be one of {ALPHA_MODES}, got {mode!r}")
    _alpha_mode = mode


def alpha_mode() -> str:
    """The transparency convention in force (``drop`` or ``white``)."""
    return _alpha_mode


@contextmanager
def trusting_code(enabled: bool = True) -> Iterator[None]:
    """Within the block, specs read from files may name any code (the entry points' ``trust_code=true``).

    Args:
        enabled: whether to trust; ``False`` restores the default refusal inside an outer trusting block.

    Example:
        >>> from facefd import trusting_code
        >>> from facefd.utils.settings import code_trusted
        >>> with trusting_code():
        ...     code_trusted()
        True
        >>> code_trusted()
        False
    """
    token = _TRUST_CODE.set(bool(enabled))
    try:
        yield
    finally:
        _TRUST_CODE.reset(token)


def code_trusted() -> bool:
    """Whether the caller is inside :func:`trusting_code`."""
    return _TRUST_CODE.get()
