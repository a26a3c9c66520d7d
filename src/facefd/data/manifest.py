"""The anonymizer's ``manifest.jsonl``: one JSON record a line, read back by resume and by the evaluation."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from facefd.utils.errors import UserError

log = logging.getLogger(__name__)


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """Records of ``manifest.jsonl``; a line cut off by a killed run (or any non-JSON line) is skipped
    with a warning that names the file and line."""
    records = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d is not a complete JSON record (a run cut off while writing?); skipped", path, n)
            continue
        if isinstance(rec, dict) and "key" in rec:
            records.append(rec)
        else:
            log.warning("%s:%d is not a manifest record; skipped", path, n)
    return records


class ManifestError(UserError, ValueError):
    """A manifest record that points outside the folders it belongs to."""


def record_path(root: str | Path, key: Any, suffix: str = "") -> Path:
    """``root / key`` (with ``suffix`` replacing the key's) when it stays inside ``root``, links resolved.

    Manifests are data: a key that is absolute, climbs out with ``..`` or reaches outside through a link
    is refused, so no file outside the folders the user named is read, stat'ed or shown.

    Args:
        root: the input or output folder.
        key: the record's ``key`` (a relative path; any bytes round-trip as surrogate escapes).
        suffix: the output's suffix (``.png``), or ``""`` for the key as it is.

    Returns:
        The path inside ``root``.

    Raises:
        ManifestError: the key leaves ``root``.

    Example:
        >>> record_path("/data/out", "people/ann.jpg", ".png").as_posix()
        '/data/out/people/ann.png'
    """
    rel = Path(str(key))
    if not isinstance(key, str) or not key or rel.is_absolute() or ".." in rel.parts:
        raise ManifestError(f"manifest key {key!r} is not a relative path inside {root}")
    path = Path(root) / (rel.with_suffix(suffix) if suffix else rel)
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise ManifestError(f"manifest key {key!r} leads outside {root} (through a link)")
    return path
