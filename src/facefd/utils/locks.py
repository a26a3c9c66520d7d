"""One writer per output folder: an OS file lock (``flock``) on ``.facefd.lock``, with the holder's pid
and host written in it, so a second run refuses in one line naming the holder."""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from pathlib import Path
from typing import Iterator, Optional

from facefd.utils.errors import UserError

log = logging.getLogger(__name__)
LOCK_NAME = ".facefd.lock"


class FolderLockedError(UserError, RuntimeError):
    """Another run holds the output folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _holder(text: str) -> Optional[dict]:
    try:
        holder = json.loads(text)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) and {"pid", "host"} <= set(holder) else None


@contextlib.contextmanager
def folder_lock(folder: str | Path, purpose: str = "a facefd run") -> Iterator[Path]:
    """Hold ``folder``'s lock for the block.

    A holder on this host that died (its pid is gone) is taken over; a live one, or one recorded from
    another host (whose liveness cannot be checked from here), is reported and left alone.

    Args:
        folder: the output folder (created if missing).
        purpose: what the lock is for, written beside the pid and host.

    Yields:
        The lock file.

    Raises:
        FolderLockedError: another run holds the folder; the message names its pid, host and the file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fh.read()) or {}
            raise FolderLockedError(f"{folder} is being written by {holder.get('purpose', 'another run')} "
                                    f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')}, lock {path}); "
                                    "wait for it to finish or choose another output folder") from None
        host = socket.gethostname()
        holder = _holder(fh.read())
        if holder and (holder["host"] != host or _alive(int(holder["pid"]))) and int(holder["pid"]) != os.getpid():
            fcntl.flock(fh, fcntl.LOCK_UN)
            where = "another host" if holder["host"] != host else "this host"
            raise FolderLockedError(f"{folder} is locked by pid {holder['pid']} on {holder['host']} ({where}; lock {path}); "
                                    "if that run is over, delete the lock file")
        if holder:
            log.warning("taking over %s from pid %s on %s, which is no longer running", path, holder["pid"], host)
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": host, "purpose": purpose}))
        fh.flush()
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)  # a finished run leaves no lock file in the output
            fcntl.flock(fh, fcntl.LOCK_UN)
