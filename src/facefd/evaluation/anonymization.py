"""``task=anonymization``: how private and how faithful an anonymized folder is (Piano et al., Tables I-III).

* Re-identification: queries = anonymized images, gallery = originals, relevance = same identity (an
  identity file ``file,identity`` or, without one, the file stem: each original is its own identity).
  Re-ID@K and mAP@K per embedder: dlib's 128-d face-identity network (default, offline; L2), or any
  extractor entry (``fdd@FILE``, ``timm:M@FILE``, a CLIP image encoder ``{_target_: ...}``; cosine).
* Attribute preservation: the probe's predictions on anonymized images against the originals' labels
  (the original folder's attribute file, else the probe's predictions on the originals): AUC and
  accuracy per binary attribute, accuracy per category (ethnicity, age group).
* Distribution: FDD / FID between the two folders.
Writes JSON, a Markdown table and a side-by-side PNG grid.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from PIL import Image, ImageDraw
from torchmetrics.functional.classification import binary_auroc

from facefd.data.attributes import read_attribute_table
from facefd.data.datamodule import AUTO_ATTRIBUTE_FILES
from facefd.data.images import list_images, load_rgb
from facefd.data.manifest import read_manifest, record_path
from facefd.metrics.extractors import build_extractors
from facefd.evaluation.image_sets import ImageSet, set_features
from facefd.evaluation.reid import reid
from facefd.metrics.frechet import frechet_distance
from facefd.models.probe.features import FeatureCache
from facefd.utils.files import atomic_path, write_json, write_text

log = logging.getLogger(__name__)


def pair_images(original: str | Path, anonymized: str | Path) -> list[tuple[Path, Path]]:
    """(original, anonymized) pairs: from the anonymizer's manifest when there is one, else by relative
    path without extension. Originals without an anonymized counterpart are left out."""
    original, anonymized = Path(original), Path(anonymized)
    manifest = anonymized / "manifest.jsonl"
    pairs: dict[str, tuple[Path, Path]] = {}
    if manifest.exists():
        for rec in read_manifest(manifest):  # a cut-off last line is skipped with a warning
            if rec.get("status") == "anonymized" and rec.get("output"):
                # the record is data: both paths are rebuilt inside the folders given here, never taken as written
                source = record_path(original, rec["key"])
                output = record_path(anonymized, rec["key"], Path(str(rec["output"])).suffix)
                if output.exists():
                    pairs[rec["key"]] = (source, output)
    else:
        by_stem = {p.relative_to(anonymized).with_suffix("").as_posix(): p for p in list_images(anonymized)}
        for p in list_images(original):
            key = p.relative_to(original).with_suffix("").as_posix()
            if key in by_stem:
                pairs[key] = (p, by_stem[key])
    if not pairs:
        raise ValueError(f"no anonymized image in {anonymized} matches an image of {original}")
    return [pairs[k] for k in sorted(pairs)]


def read_identities(path: Optional[str | Path], originals: Sequence[Path], root: Path) -> list[str]:
    """Identity of each original: from ``file,identity`` rows (relative path or file name), else the stem."""
    if not path:
        return [p.relative_to(root).with_suffix("").as_posix() for p in originals]
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    table = {}
    for r in rows:
        if len(r) >= 2 and r[1] and r[0].lower() not in ("file", "image", "filename", "image_id"):
            table[r[0]] = r[1]
    out = []
    for p in originals:
        rel = p.relative_to(root).as_posix()
        ident = table.get(rel, table.get(p.name))
        if ident is None:
            raise ValueError(f"{path} has no identity for {rel}")
        out.append(ident)
    return out


def _embed_dlib(embedder: Any, paths: Sequence[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    feats, found = embedder.embed_many([load_rgb(p) for p in paths])
    return feats.float(), torch.tensor(found)


def reidentification(pairs: Sequence[tuple[Path, Path]], identities: Sequence[str], embedders: Sequence[Any],
                     cache_dir: str | Path, ks: Sequence[int] = (1, 5, 10),
                     extract_kwargs: Optional[dict[str, Any]] = None) -> dict[str, dict[str, float]]:
    originals, anonymized = [a for a, _ in pairs], [b for _, b in pairs]
    results: dict[str, dict[str, float]] = {}
    for entry in embedders:
        if entry == "dlib":
            from facefd.models.identity import DlibIdentity

            embedder = DlibIdentity()
            g, g_found = _embed_dlib(embedder, originals)
            q, q_found = _embed_dlib(embedder, anonymized)
            res = reid(q[q_found], g[g_found], [identities[i] for i in range(len(pairs)) if q_found[i]],
                       [identities[i] for i in range(len(pairs)) if g_found[i]], ks, distance="l2")
            res["queries_without_face"] = int((~q_found).sum())
            res["gallery_without_face"] = int((~g_found).sum())
            results["dlib"] = res
            continue
        for label, extractor in build_extractors([entry]):
            cache = FeatureCache(cache_dir)
            g = set_features(extractor, ImageSet("originals", originals), cache, **(extract_kwargs or {}))
            q = set_features(extractor, ImageSet("anonymized", anonymized), cache, **(extract_kwargs or {}))
            results[label] = reid(q, g, identities, identities, ks, distance="cosine")
    return results


def attribute_preservation(pairs: Sequence[tuple[Path, Path]], original_root: Path,
                           predictor: Any) -> dict[str, dict[str, float]]:
    """Per attribute: AUC and accuracy of the predictions on anonymized images against the originals'
    labels (their attribute file where it covers the attribute, else the predictions on the originals)."""
    originals, anonymized = [a for a, _ in pairs], [b for _, b in pairs]
    pred_orig, pred_anon = predictor.predict(originals), predictor.predict(anonymized)
    attr_path = next((original_root / n for n in AUTO_ATTRIBUTE_FILES if (original_root / n).exists()), None)
    table = read_attribute_table(attr_path) if attr_path else None
    out: dict[str, dict[str, float]] = {}
    for name in predictor.attribute_names:
        source = "predicted on originals"
        labels = (pred_orig[name] > 0.5).long()
        if table is not None and name in table.names:
            rows = [table.lookup(p.relative_to(original_root).as_posix()) for p in originals]
            if all(r is not None for r in rows):
                labels = torch.tensor([int(table.values[r, table.names.index(name)]) for r in rows])
                source = attr_path.name
        scores = pred_anon[name]
        acc = float(((scores > 0.5).long() == labels).double().mean())
        auc = float(binary_auroc(scores, labels)) if 0 < int(labels.sum()) < len(labels) else float("nan")
        out[name] = {"auc": auc, "accuracy": acc, "labels": source, "n": len(labels)}
    for name in predictor.categories:
        agree = (pred_anon[name].argmax(1) == pred_orig[name].argmax(1)).double().mean()
        out[name] = {"accuracy": float(agree), "labels": "predicted on originals", "n": len(pairs)}
    return out


def distribution_distances(pairs: Sequence[tuple[Path, Path]], metrics: Sequence[Any], cache_dir: str | Path,
                           extract_kwargs: Optional[dict[str, Any]] = None) -> dict[str, float]:
    cache = FeatureCache(cache_dir)
    out = {}
    for label, extractor in build_extractors(metrics):
        a = set_features(extractor, ImageSet("originals", [p for p, _ in pairs]), cache, **(extract_kwargs or {}))
        b = set_features(extractor, ImageSet("anonymized", [q for _, q in pairs]), cache, **(extract_kwargs or {}))
        a, b = a.double(), b.double()
        out[label] = frechet_distance(a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))
    return out


def side_by_side(pairs: Sequence[tuple[Path, Path]], path: str | Path, rows: int = 8, thumb: int = 128) -> Path:
    """Originals (left) and anonymized results (right), one pair per row."""
    chosen = list(pairs)[:rows]
    canvas = Image.new("RGB", (2 * thumb + 4, 16 + len(chosen) * thumb), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), "original", fill="black")
    draw.text((thumb + 8, 2), "anonymized", fill="black")
    for i, (a, b) in enumerate(chosen):
        canvas.paste(load_rgb(a).resize((thumb, thumb), Image.BILINEAR), (0, 16 + i * thumb))
        canvas.paste(load_rgb(b).resize((thumb, thumb), Image.BILINEAR), (thumb + 4, 16 + i * thumb))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Pairs: {report['pairs']}", "", "| embedder | " + " | ".join(
        k for k in next(iter(report["reid"].values()), {}) if k.startswith(("reid@", "map@", "map_found@"))) + " |"]
    keys = [k for k in next(iter(report["reid"].values()), {}) if k.startswith(("reid@", "map@", "map_found@"))]
    lines.append("|---|" + "---|" * len(keys))
    lines += [f"| {e} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |" for e, r in report["reid"].items()]
    if report.get("attributes"):
        lines += ["", "| attribute | AUC | accuracy | labels |", "|---|---|---|---|"]
        lines += [f"| {n} | {v.get('auc', float('nan')):.3f} | {v['accuracy']:.3f} | {v['labels']} |"
                  for n, v in report["attributes"].items()]
    if report.get("distances"):
        lines += ["", "| metric | Fréchet distance |", "|---|---|"]
        lines += [f"| {m} | {v:.4g} |" for m, v in report["distances"].items()]
    return "\n".join(lines) + "\n"


def run_anonymization_eval(original: str | Path, anonymized: str | Path, out_dir: str | Path,
                           embedders: Sequence[Any] = ("dlib",), metrics: Sequence[Any] = (),
                           predictor: Optional[Callable[[], Any]] = None, identities: Optional[str] = None,
                           ks: Sequence[int] = (1, 5, 10), cache_dir: str | Path = "data/feature_cache",
                           grid_rows: int = 8, extract_kwargs: Optional[dict[str, Any]] = None,
                           num_samples: Optional[int] = None, seed: int = 0) -> dict[str, Any]:
    """Re-identification, attribute preservation and distribution distances of an anonymized folder.

    Args:
        original: the original images.
        anonymized: the output folder of ``anonymize.py`` (its manifest pairs the images).
        out_dir: where ``anonymization.json``, ``.md`` and the grid PNG go.
        embedders: Re-ID embedders (``dlib`` and/or extractor entries).
        metrics: extractor entries for the Fréchet distance between the folders.
        predictor: a factory of the attribute predictor, or ``None``.
        identities: a ``file,identity`` CSV of the originals; ``None``: each original is its own identity.
        ks: the K of Re-ID@K and mAP@K.
        cache_dir: the feature cache.
        grid_rows: pairs drawn in the grid.
        extract_kwargs: batch size, workers and processes of feature extraction.
        num_samples: a seeded sample of at most this many pairs (:func:`facefd.data.images.seeded_sample`).
        seed: the sample's seed.

    Returns:
        The report (also written as JSON and Markdown); ``report["sample"]`` records the sample.
    """
    from facefd.data.images import seeded_sample

    original = Path(original)
    all_pairs = pair_images(original, anonymized)
    pairs = seeded_sample(all_pairs, num_samples, seed)
    ids = read_identities(identities, [a for a, _ in pairs], original)
    report: dict[str, Any] = {"pairs": len(pairs), "original": str(original), "anonymized": str(anonymized),
                              "sample": {"num_samples": num_samples, "seed": seed, "pairs_listed": len(all_pairs)}}
    report["reid"] = reidentification(pairs, ids, embedders, cache_dir, ks, extract_kwargs)
    report["definitions"] = {
        "reid@K": "share of queries (anonymized images) with a gallery original of their identity in the top K",
        "map@K": "mean AP@K, AP@K = sum_{i<=K} precision@i * rel(i) / min(R, K), R = relevant originals",
        "map_found@K": "mean AP@K divided by the relevant originals found in the top K (torchmetrics RetrievalMAP)",
    }
    if predictor is not None:
        report["attributes"] = attribute_preservation(pairs, original, predictor())
    if metrics:
        report["distances"] = distribution_distances(pairs, metrics, cache_dir, extract_kwargs)
    out = Path(out_dir)
    write_json(out / "anonymization.json", report)
    write_text(out / "anonymization.md", markdown(report))
    side_by_side(pairs, out / "anonymization_grid.png", grid_rows)
    return report
