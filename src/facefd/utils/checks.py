"""Checks that can run before the expensive work (models loading, features extracted), so a bad path
fails in a second with a message that names it, not after minutes."""
from __future__ import annotations

import os
from pathlib import Path

from facefd.utils.errors import OutputLocationError


def check_writable(path: str | Path, is_file: bool = True) -> Path:
    """Raise :class:`OutputLocationError` unless ``path`` (a file, or a folder when ``is_file=False``) can be
    written: its nearest existing folder must be a writable folder. Nothing is created."""
    path = Path(path).expanduser()
    if is_file and path.is_dir():
        raise OutputLocationError(f"output {path} is a folder; give a file name")
    folder = path.parent if is_file else path
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputLocationError(f"output location {folder}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputLocationError(f"output location {folder} is not writable ({probe} does not allow writing)")
    return path
