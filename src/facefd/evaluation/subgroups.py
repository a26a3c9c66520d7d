"""FDD per subgroup (gender, age, ethnicity...): which groups a generator serves worse.

Each image of the reference and generated sets gets a group per ``by`` attribute: from the folder's
CelebA-style attribute file or FairFace-style category CSV where it has one, else from an
:class:`facefd.AttributePredictor` (binary: p > 0.5; categories: the most likely class). Then for
every group and metric: the distance between the group's reference and generated images, both sample
counts, the group's share of each set, and a bootstrap interval when asked.
"""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from facefd.data.attributes import read_attribute_table, read_category_table
from facefd.data.datamodule import AUTO_ATTRIBUTE_FILES
from facefd.metrics.extractors import build_extractors
from facefd.evaluation.image_sets import ImageSet, folder_sample, set_features
from facefd.evaluation.plots import grouped_bars
from facefd.metrics.frechet_metric import FrechetDistance
from facefd.models.probe.features import FeatureCache
from facefd.utils.files import write_json, write_text

log = logging.getLogger(__name__)


@dataclass
class SubgroupRow:
    attribute: str
    group: str
    metric: str
    fd: Optional[float]
    n_reference: int
    n_generated: int
    share_reference: float
    share_generated: float
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    note: str = ""


def _label_files(root: Path, categories_file: Optional[str], by: Sequence[str]) -> tuple[Any, Any]:
    """The folder's binary attribute table and its category table (the ``by`` columns it has), each read once."""
    attr_path = next((root / n for n in AUTO_ATTRIBUTE_FILES if (root / n).exists()), None)
    table = read_attribute_table(attr_path) if attr_path else None
    cats = None
    if categories_file:
        cat_path = Path(categories_file) if Path(categories_file).is_absolute() else root / categories_file
        with open(cat_path, newline="") as fh:
            header = next(csv.reader(fh), [])
        columns = {n: n for n in by if n in header}
        cats = read_category_table(cat_path, columns) if columns else None
    return table, cats


def group_labels(paths: Sequence[Path], root: str | Path, by: Sequence[str], categories_file: Optional[str] = None,
                 predictor: Optional[Callable[[], Any]] = None) -> dict[str, list[str]]:
    """``{attribute: [group of each image]}``: from label files where they cover the attribute, else predicted."""
    root = Path(root)
    table, cats = _label_files(root, categories_file, by)
    keys = [p.relative_to(root).as_posix() for p in paths]
    out: dict[str, list[str]] = {}
    missing: list[str] = []
    for name in by:
        if table is not None and name in table.names:
            rows = [table.lookup(k) for k in keys]
            if all(r is not None for r in rows):
                col = table.names.index(name)
                out[name] = [name if table.values[r, col] else f"not {name}" for r in rows]
                continue
        if cats is not None and name in cats.names:
            rows = [cats.lookup(k) for k in keys]
            if all(r is not None for r in rows):
                col = cats.names.index(name)
                out[name] = [cats.classes[name][cats.values[r, col]] for r in rows]
                continue
        missing.append(name)
    if missing:
        if predictor is None:
            raise ValueError(f"{root} has no labels for {missing} and no predictor is configured "
                             "(predictor.extractor=... predictor.heads=... predicts them)")
        model = predictor()
        log.info("predicting %s for %d images of %s", missing, len(paths), root)
        probs = {n: [] for n in missing}
        for start in range(0, len(paths), 64):
            pred = model.predict(list(paths[start:start + 64]))
            for n in missing:
                if n not in pred:
                    raise ValueError(f"the predictor knows no {n!r}; it predicts {sorted(pred)}")
                probs[n].append(pred[n])
        for n in missing:
            p = torch.cat(probs[n])
            if p.ndim == 1:
                out[n] = [n if v > 0.5 else f"not {n}" for v in p.tolist()]
            else:
                classes = model.categories[n]
                out[n] = [classes[i] for i in p.argmax(1).tolist()]
    return out


def run_subgroups(reference_root: str | Path, generated_root: str | Path, by: Sequence[str], metrics: Sequence[Any],
                  cache_dir: str | Path, num_samples: Optional[int] = None, bootstrap: int = 0, alpha: float = 0.05,
                  min_count: int = 10, seed: int = 0, categories_file: Optional[str] = None,
                  predictor: Optional[Callable[[], Any]] = None, skip_bad_images: bool = False,
                  extract_kwargs: Optional[dict[str, Any]] = None) -> list[SubgroupRow]:
    ref = ImageSet("reference", folder_sample(reference_root, num_samples, seed, skip_bad_images))
    gen = ImageSet("generated", folder_sample(generated_root, num_samples, seed, skip_bad_images))
    ref_groups = group_labels(ref.paths, reference_root, by, categories_file, predictor)
    gen_groups = group_labels(gen.paths, generated_root, by, categories_file, predictor)
    cache = FeatureCache(cache_dir)
    rows: list[SubgroupRow] = []
    for label, extractor in build_extractors(metrics):  # all built first: a bad entry fails before any work
        ref_feats = set_features(extractor, ref, cache, **(extract_kwargs or {}))
        gen_feats = set_features(extractor, gen, cache, **(extract_kwargs or {}))
        metric = FrechetDistance(extractor, reservoir_size=max(len(ref.paths), len(gen.paths)) if bootstrap else 0,
                                 reservoir_seed=seed, num_features=ref_feats.shape[1])
        for attr in by:
            for group in sorted(set(ref_groups[attr]) | set(gen_groups[attr])):
                ri = torch.tensor([g == group for g in ref_groups[attr]])
                gi = torch.tensor([g == group for g in gen_groups[attr]])
                row = SubgroupRow(attr, group, label, None, int(ri.sum()), int(gi.sum()),
                                  float(ri.float().mean()), float(gi.float().mean()))
                if min(row.n_reference, row.n_generated) < max(min_count, 2):
                    row.note = f"fewer than {max(min_count, 2)} images in a set"
                else:
                    metric.reset()
                    metric.update_features(ref_feats[ri], real=True)
                    metric.update_features(gen_feats[gi], real=False)
                    row.fd = float(metric.compute())
                    if bootstrap:
                        ci = metric.compute_ci(n_boot=bootstrap, alpha=alpha, seed=seed)
                        row.ci_low, row.ci_high = ci["low"], ci["high"]
                rows.append(row)
    return rows


def write_subgroups(rows: Sequence[SubgroupRow], out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    records = [asdict(r) for r in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    groups = list(dict.fromkeys(f"{r.attribute}: {r.group}" for r in rows))
    metrics = list(dict.fromkeys(r.metric for r in rows))
    value = {(f"{r.attribute}: {r.group}", r.metric): (r.fd if r.fd is not None else float("nan")) for r in rows}
    return {"csv": write_text(out / "subgroups.csv", buf.getvalue()),
            "json": write_json(out / "subgroups.json", records),
            "png": grouped_bars(groups, {m: [value.get((g, m), float("nan")) for g in groups] for m in metrics},
                                out / "subgroups.png", ylabel="Fréchet distance", title="Distance per subgroup")}
