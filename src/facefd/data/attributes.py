"""Readers for CelebA-style attribute and partition files (and CSV attribute tables)."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

_ID_COLUMNS = ("image_id", "filename", "file", "image", "path")


@dataclass
class AttributeTable:
    """Binary labels (0/1) by image name; rows are found by relative path or by file name."""

    names: list[str]
    keys: list[str]
    values: np.ndarray  # [rows, attributes] in {0, 1}
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for i, key in enumerate(self.keys):
            self._index.setdefault(key, i)
            self._index.setdefault(Path(key).name, i)

    def lookup(self, key: str) -> Optional[int]:
        row = self._index.get(key)
        return row if row is not None else self._index.get(Path(key).name)


def _to_binary(raw: np.ndarray, path: Path) -> np.ndarray:
    unique = set(np.unique(raw).tolist())
    if unique <= {-1.0, 1.0}:
        return (raw > 0).astype(np.float32)
    if unique <= {0.0, 1.0}:
        return raw.astype(np.float32)
    raise ValueError(f"{path}: attribute values must be -1/1 or 0/1, found {sorted(unique)[:10]}")


def read_attribute_table(path: str | Path) -> AttributeTable:
    """Read ``list_attr_celeba.txt`` (count line, names line, ``file v1 v2 ...``) or a CSV with an id column."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows:
            raise ValueError(f"{path} has no rows")
        id_col = next((c for c in rows[0] if c.lower() in _ID_COLUMNS), None)
        if id_col is None:
            raise ValueError(f"{path} needs an image id column (one of {_ID_COLUMNS})")
        names = [c for c in rows[0] if c != id_col]
        raw = np.array([[float(r[n]) for n in names] for r in rows])
        return AttributeTable(names, [r[id_col] for r in rows], _to_binary(raw, path))
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    if len(lines) < 3:
        raise ValueError(f"{path} is not a CelebA attribute file (expected count, names, rows)")
    names = lines[1]
    body = lines[2:]
    bad = [i + 3 for i, row in enumerate(body) if len(row) != len(names) + 1]
    if bad:
        raise ValueError(f"{path}: line(s) {bad[:5]} do not have {len(names)} values")
    raw = np.array([[float(v) for v in row[1:]] for row in body])
    return AttributeTable(names, [row[0] for row in body], _to_binary(raw, path))


def read_partition_file(path: str | Path) -> dict[str, int]:
    """``file split`` per line, split 0/1/2 = train/val/test."""
    out: dict[str, int] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise ValueError(f"{path}:{n}: expected '<file> <0|1|2>', got {line!r}")
        out[parts[0]] = int(parts[1])
    return out
