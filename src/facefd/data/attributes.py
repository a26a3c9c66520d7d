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


def _read_csv_with_ids(path: Path) -> tuple[list[dict[str, str]], str]:
    """The rows of a label CSV and the name of its image id column."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path} has no rows")
    id_col = next((c for c in rows[0] if c.lower() in _ID_COLUMNS), None)
    if id_col is None:
        raise ValueError(f"{path} needs an image id column (one of {_ID_COLUMNS})")
    return rows, id_col


def read_attribute_table(path: str | Path) -> AttributeTable:
    """Read ``list_attr_celeba.txt`` (count line, names line, ``file v1 v2 ...``) or a CSV with an id column."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        rows, id_col = _read_csv_with_ids(path)
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


#: The 40 binary attributes of CelebA / CelebA-HQ, in the order of ``list_attr_celeba.txt``.
CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)

#: FairFace's label sets (Karkkainen & Joo 2021), the groups the FDD paper balances its training set on.
FAIRFACE_RACE7: tuple[str, ...] = (
    "White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern",
)
FAIRFACE_AGE: tuple[str, ...] = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")


@dataclass
class CategoryTable(AttributeTable):
    """Categorical labels (age group, ethnicity...) by image name: ``values`` holds class indices
    [rows, columns] and ``classes[name]`` lists each column's classes."""

    classes: dict[str, list[str]] = field(default_factory=dict)


_KNOWN_CLASS_ORDERS = {frozenset(FAIRFACE_RACE7): FAIRFACE_RACE7, frozenset(FAIRFACE_AGE): FAIRFACE_AGE}


def _class_order(found: set[str]) -> list[str]:
    """FairFace's order when the column's values are a subset of a FairFace label set, else sorted."""
    for known, order in _KNOWN_CLASS_ORDERS.items():
        if found <= known:
            return list(order)
    return sorted(found)


def read_category_table(path: str | Path, columns: dict[str, str]) -> CategoryTable:
    """Read categorical columns of a CSV with an image id column (FairFace: ``file,age,gender,race``).

    ``columns`` maps the name facefd uses (``ethnicity``) to the CSV column (``race``).
    """
    path = Path(path)
    rows, id_col = _read_csv_with_ids(path)
    missing = [c for c in columns.values() if c not in rows[0]]
    if missing:
        raise ValueError(f"{path} has no column(s) {missing}; it has {list(rows[0])}")
    classes: dict[str, list[str]] = {}
    values = np.zeros((len(rows), len(columns)), dtype=np.int64)
    for j, (name, col) in enumerate(columns.items()):
        raw = [r[col].strip() for r in rows]
        if any(not v for v in raw):
            raise ValueError(f"{path}: column {col!r} has empty values")
        classes[name] = _class_order(set(raw))
        lookup = {c: i for i, c in enumerate(classes[name])}
        values[:, j] = [lookup[v] for v in raw]
    return CategoryTable(list(columns), [r[id_col] for r in rows], values, classes=classes)
