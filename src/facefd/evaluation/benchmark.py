"""The FDD paper's benchmark (Fig. 1): the Fréchet distance of many image sets to one reference set,
for several feature extractors, raw and rescaled so metrics of different scales share one chart.

Sets: other folders, a held-out part of the reference (the noise floor at this sample size), and
perturbed copies of the held-out part made on the fly. The reference features are computed once per
extractor (and cached on disk with every other set's features).
"""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from tqdm.auto import tqdm

from facefd.data.images import drop_bad_images, list_images
from facefd.evaluation.image_sets import ImageSet, folder_sample, parse_set_entry, set_features, split_reference
from facefd.evaluation.plots import grouped_bars
from facefd.metrics.extractors import build_extractors
from facefd.metrics.frechet_metric import FrechetDistance
from facefd.models.probe.features import FeatureCache
from facefd.utils.files import write_json, write_text

log = logging.getLogger(__name__)

@dataclass
class BenchmarkRow:
    set: str
    kind: str
    metric: str
    fd: float
    rescaled: Optional[float]
    n_reference: int
    n_set: int
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    ci_low_rescaled: Optional[float] = None
    ci_high_rescaled: Optional[float] = None


def build_sets(reference_root: str | Path, set_entries: Sequence[str], perturbations: dict[str, Any],
               num_samples: Optional[int], seed: int = 0, skip_bad_images: bool = False,
               include_heldout: bool = True) -> tuple[ImageSet, list[ImageSet]]:
    """The reference part and the sets compared with it (held-out, perturbed, other folders)."""
    ref_paths, held = split_reference(list_images(reference_root), num_samples, seed)
    ref_paths, held = drop_bad_images(ref_paths, skip_bad_images), drop_bad_images(held, skip_bad_images)
    reference = ImageSet("reference", ref_paths, kind="reference")
    sets = [ImageSet("held-out", held, kind="heldout")] if include_heldout else []
    for name, perturbation in perturbations.items():
        sets.append(ImageSet(name, held, kind="perturbed", perturbation=perturbation, seed=seed))
    for entry in set_entries:
        name, root = parse_set_entry(entry)
        sets.append(ImageSet(name, folder_sample(root, num_samples, seed, skip_bad_images)))
    names = [s.name for s in sets]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"set names must be unique, {duplicated} repeat: name folders with NAME@DIR")
    return reference, sets


def run_benchmark(reference: ImageSet, sets: Sequence[ImageSet], metrics: Sequence[Any], cache_dir: str | Path,
                  bootstrap: int = 0, alpha: float = 0.05, rescale_set: Optional[str] = None,
                  rescale_values: Optional[dict[str, float]] = None, seed: int = 0,
                  extract_kwargs: Optional[dict[str, Any]] = None) -> list[BenchmarkRow]:
    """FD of every set to the reference for every metric (``NAME@WEIGHTS`` extractor entries)."""
    cache = FeatureCache(cache_dir)
    if rescale_set and rescale_set not in {s.name for s in sets}:
        raise ValueError(f"rescale.set={rescale_set!r} is not one of the sets {[s.name for s in sets]}")
    rows: list[BenchmarkRow] = []
    for label, extractor in build_extractors(metrics):  # all built first: a bad entry fails before any work
        largest = max([len(s.paths) for s in sets] + [len(reference.paths)])
        ref_feats = set_features(extractor, reference, cache, **(extract_kwargs or {}))
        metric = FrechetDistance(extractor, reset_real_features=False, reservoir_size=largest if bootstrap else 0,
                                 reservoir_seed=seed, num_features=ref_feats.shape[1])
        metric.update_features(ref_feats, real=True)
        for image_set in tqdm(sets, desc=f"{label} distances", leave=False):
            metric.reset()
            metric.update_features(set_features(extractor, image_set, cache, **(extract_kwargs or {})), real=False)
            fd = float(metric.compute())
            row = BenchmarkRow(image_set.name, image_set.kind, label, fd, None, len(reference.paths),
                               len(image_set.paths))
            if bootstrap:
                ci = metric.compute_ci(n_boot=bootstrap, alpha=alpha, seed=seed)
                row.ci_low, row.ci_high = ci["low"], ci["high"]
            rows.append(row)
            log.info("%s  %s: %.4g (n = %d)", label, image_set.name, fd, len(image_set.paths))
    rescale(rows, rescale_set, rescale_values)
    return rows


def rescale(rows: list[BenchmarkRow], rescale_set: Optional[str] = None,
            rescale_values: Optional[dict[str, float]] = None) -> None:
    """Divide each metric's values by its value on ``rescale_set`` (an independent set) or by a fixed
    per-metric ratio, as the FDD paper does to draw metrics of different scales side by side."""
    divisors: dict[str, float] = dict(rescale_values or {})
    if rescale_set:
        divisors.update({r.metric: r.fd for r in rows if r.set == rescale_set})
    for r in rows:
        d = divisors.get(r.metric)
        if d:
            r.rescaled = r.fd / d
            if r.ci_low is not None:
                r.ci_low_rescaled, r.ci_high_rescaled = r.ci_low / d, r.ci_high / d


def write_benchmark(rows: Sequence[BenchmarkRow], out_dir: str | Path) -> dict[str, Path]:
    """``benchmark.csv``, ``benchmark.json`` and ``benchmark.png`` (grouped bars, rescaled when available)."""
    out = Path(out_dir)
    records = [asdict(r) for r in rows]
    fields = list(records[0]) if records else []
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    paths = {"csv": write_text(out / "benchmark.csv", buf.getvalue()), "json": write_json(out / "benchmark.json", records)}
    use_rescaled = all(r.rescaled is not None for r in rows)
    groups = list(dict.fromkeys(r.set for r in rows))
    metrics = list(dict.fromkeys(r.metric for r in rows))
    value = {(r.set, r.metric): (r.rescaled if use_rescaled else r.fd) for r in rows}
    series = {m: [value.get((g, m), float("nan")) for g in groups] for m in metrics}
    errors = None
    if all(r.ci_low is not None for r in rows):
        key = "ci_low_rescaled" if use_rescaled else "ci_low"
        errors = {m: [(getattr(r, key), getattr(r, key.replace("low", "high"))) for g in groups for r in rows
                      if r.set == g and r.metric == m] for m in metrics}
    paths["png"] = grouped_bars(groups, series, out / "benchmark.png",
                                ylabel="rescaled distance" if use_rescaled else "Fréchet distance",
                                title="Fréchet distance to the reference", errors=errors)
    return paths


def summary_table(rows: Sequence[BenchmarkRow]) -> str:
    """A Markdown table: one row per set, one column per metric (rescaled value in brackets)."""
    metrics = list(dict.fromkeys(r.metric for r in rows))
    groups = list(dict.fromkeys(r.set for r in rows))
    cell = {(r.set, r.metric): f"{r.fd:.4g}" + (f" ({r.rescaled:.3g})" if r.rescaled is not None else "") for r in rows}
    lines = ["| set | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    lines += ["| " + g + " | " + " | ".join(cell.get((g, m), "") for m in metrics) + " |" for g in groups]
    return "\n".join(lines)


__all__ = ["BenchmarkRow", "build_sets", "rescale", "run_benchmark", "summary_table", "write_benchmark"]
