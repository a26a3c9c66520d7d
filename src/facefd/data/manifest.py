"""The anonymizer's ``manifest.jsonl``: one JSON record a line, read back by resume and by the evaluation."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

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
