"""``facefd score A B``: the scores face-generation papers report, from one command.

``A`` is the reference (real, training) set and ``B`` the generated one. Each extractor runs once per
folder (its features cached by extractor fingerprint and file listing, and reused by every score and
every later run); every score names the features it used.

Scores (``--metrics``, comma-separated), each on its default features or on any extractor with
``SCORE/EXTRACTOR`` (``kid/fdd@run/extractor.safetensors``, ``prdc/timm:vit_small_patch14_dinov2@w.safetensors``):

========= ================ ============================================================
score     default features what
========= ================ ============================================================
fid       inception        Fréchet distance (Heusel et al.); statistics ``.npz`` accepted
fdd       fdd@FILE         Fréchet distance on facefd's DINO-faces extractor
fd_dinov2 dinov2           Fréchet distance on DINOv2 ViT-L/14 (dgm-eval's preprocessing; Stein et al. 2023)
cmmd      clip             CMMD: RBF MMD on CLIP ViT-L/14@336 embeddings, sigma 10, x1000 (Jayasumana et al. 2024)
fd        (give one)       Fréchet distance on the extractor after ``/``
fd_inf    inception        FD∞, the bias-free extrapolation (Chong & Forsyth 2020)
kid       inception        KID: unbiased polynomial MMD² over 100 subsets of 1000
prdc      inception        precision, recall, density, coverage (k = 5)
authpct   inception        authenticity % (dgm-eval): generated samples not closer to a training sample
                           than its own nearest training neighbour
is        inception        Inception Score of B (torch-fidelity's 10 splits)
identity_ identity         share of generated faces within dlib's same-person distance (0.6) of a
leak                       reference face: memorised identities; the closest pairs as a PNG grid
========= ================ ============================================================
"""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from facefd.utils.errors import UserError

#: ``name -> (default extractor entry, what the score needs, display name)``. ``stats``: mean and
#: covariance (a statistics ``.npz`` will do); ``features``: every sample's features of both sets;
#: ``generated``: the generated set's features.
SCORES: dict[str, tuple[Optional[str], str, str]] = {
    "fid": ("inception", "stats", "FID"),
    "fdd": ("fdd@extractor/extractor.safetensors", "stats", "FDD"),
    "fd_dinov2": ("dinov2", "stats", "FD_DINOv2"),
    "cmmd": ("clip", "features", "CMMD"),
    "identity_leak": ("identity", "features", "Identity leak"),
    "fd": (None, "stats", "FD"),
    "fd_inf": ("inception", "features", "FD∞"),
    "kid": ("inception", "features", "KID"),
    "prdc": ("inception", "features", "PRDC"),
    "authpct": ("inception", "features", "AuthPct"),
    "is": ("inception", "generated", "IS"),
}


class ScoreSpecError(UserError, ValueError):
    """A ``--metrics`` list with an unknown score or an extractor entry the parser refuses."""


@dataclass(frozen=True)
class ScoreRequest:
    """One score on one extractor, as ``--metrics`` asked for it."""

    score: str
    extractor: str

    @property
    def needs(self) -> str:
        return SCORES[self.score][1]

    @property
    def title(self) -> str:
        return SCORES[self.score][2]

    @property
    def key(self) -> str:
        """The score's name in the output: ``fid`` on its default network (whatever file holds its weights),
        ``kid/fdd@run/extractor.safetensors`` on another."""
        default = (SCORES[self.score][0] or "").partition("@")[0]
        return self.score if self.extractor.partition("@")[0] == default else f"{self.score}/{self.extractor}"


def parse_metrics(text: str, weights: Optional[dict[str, str]] = None,
                  fdd_default: Optional[str] = None) -> list[ScoreRequest]:
    """``--metrics`` to score requests, every entry checked before anything loads.

    Args:
        text: ``fid,kid,prdc/fdd@run/extractor.safetensors``: score names, each optionally followed by
            ``/EXTRACTOR`` (the first ``/`` splits; the rest may be a path).
        weights: ``--weights NAME=FILE`` files (``inception``) that the default entries then use.
        fdd_default: the ``fdd`` score's extractor file when none is named.

    Returns:
        The requests, in order, duplicates dropped.

    Raises:
        ScoreSpecError: an unknown score, ``fd`` without an extractor, or an extractor entry the parser refuses.

    Example:
        >>> ", ".join(f"{r.score} on {r.extractor}" for r in parse_metrics("fid,kid/fdd@x.safetensors"))
        'fid on inception, kid on fdd@x.safetensors'
    """
    from facefd.metrics.extractors import check_extractor_entry

    weights = weights or {}
    requests: list[ScoreRequest] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        score, slash, entry = item.partition("/")
        score = score.lower()
        if score not in SCORES:
            raise ScoreSpecError(f"unknown score {score!r} in --metrics; known: {', '.join(SCORES)} "
                                 "(each may be followed by /EXTRACTOR)")
        if not slash:
            entry = SCORES[score][0] or ""
            if not entry:
                raise ScoreSpecError(f"score {score!r} needs an extractor: {score}/EXTRACTOR (e.g. fd/timm:MODEL@FILE)")
            if score == "fdd" and fdd_default:
                entry = f"fdd@{fdd_default}"
        if entry in ("inception", "fid") and "inception" in weights:
            entry = f"inception@{weights['inception']}"
        if entry == "fid" or entry.startswith("fid@"):
            entry = "inception" + entry[3:]
        if score == "is" and not (entry == "inception" or entry.startswith("inception@")):
            raise ScoreSpecError(f"--metrics {item}: the Inception Score needs the Inception's class logits: is or "
                                 "is/inception@FILE")
        try:
            check_extractor_entry(entry)
        except UserError as exc:
            raise ScoreSpecError(f"--metrics {item}: {exc}") from None
        request = ScoreRequest(score, entry)
        if request not in requests:
            requests.append(request)
    if not requests:
        raise ScoreSpecError("--metrics names no score; known: " + ", ".join(SCORES))
    return requests


class FeatureColumns(nn.Module):
    """The first ``width`` columns of another extractor's features, under their own fingerprint: the
    Inception's 2048 pool features when it also produced logits in the same pass."""

    def __init__(self, width: int, fingerprint: str, card: Optional[dict] = None) -> None:
        super().__init__()
        self.num_features, self.fingerprint, self.card = width, fingerprint, card or {}


@dataclass
class Source:
    """One side of the comparison: a folder (its sampled files) or a statistics file."""

    path: Path
    files: list[Path] = field(default_factory=list)

    @property
    def is_stats(self) -> bool:
        return self.path.suffix == ".npz"


def open_sources(a: str | Path, b: str | Path, requests: Sequence[ScoreRequest], num_samples: Optional[int],
                 seed: int, skip_bad_images: bool) -> tuple[Source, Source]:
    """Both sides checked and sampled before any model loads; a statistics file where a score needs
    features is refused in one line naming the file and the scores."""
    from facefd.evaluation.image_sets import folder_sample

    sources = []
    for side, path in (("A", Path(a)), ("B", Path(b))):
        if path.suffix == ".npz":
            if not path.is_file():
                raise UserError(f"{path}: statistics file not found")
            need = [r.score for r in requests if r.needs == "features" or (r.needs == "generated" and side == "B")]
            if need:
                raise UserError(f"{path}: a statistics file holds a mean and covariance, but {', '.join(need)} "
                                "need every sample's features: give the image folder")
            sources.append(Source(path))
            continue
        if not path.is_dir():
            raise UserError(f"{path}: not a folder of images or a statistics .npz")
        files = folder_sample(path, num_samples, seed, skip_bad_images=skip_bad_images)
        if len(files) < 2:
            raise UserError(f"{path}: {len(files)} image(s); a score needs at least 2")
        sources.append(Source(path, files))
    return sources[0], sources[1]


def build_score_extractors(requests: Sequence[ScoreRequest], trust_code: bool = False) -> dict[str, nn.Module]:
    """One module per distinct extractor entry. The Inception always gives its logits too (one more matrix
    product): its cached features then serve FID, KID, PRDC, AuthPct and IS alike, in this run and later ones."""
    from facefd.metrics.extractors import InceptionFID, build_extractor, parse_extractor_entry
    from facefd.utils.settings import trusting_code

    modules: dict[str, nn.Module] = {}
    for entry in dict.fromkeys(r.extractor for r in requests):
        _, name, path = parse_extractor_entry(entry)
        if name == "inception":
            modules[entry] = InceptionFID(path, logits=True)
        else:
            with trusting_code(trust_code):
                modules[entry] = build_extractor(name, path)
    return modules


def features_of(extractor: nn.Module, source: Source, label: str, cache_dir: Path, **extract_kwargs) -> torch.Tensor:
    """The cached features of a folder source (extracted once per extractor and file listing)."""
    from facefd.models.probe.features import FeatureCache

    return FeatureCache(cache_dir).get(extractor, source.files, name=f"{source.path.name} · {label}", **extract_kwargs)


def frechet_metric(extractor: nn.Module, a: Source, b: Source, fa: Optional[torch.Tensor], fb: Optional[torch.Tensor],
                   reservoir: int):
    """A FrechetDistance holding both sides (features, or a statistics file as the fixed reference)."""
    from facefd.metrics.frechet_metric import FrechetDistance
    from facefd.metrics.stats import GaussianStats

    metric = FrechetDistance(extractor, reset_real_features=False, reservoir_size=reservoir)
    if a.is_stats and b.is_stats:
        raise UserError("both sides are statistics files: use `facefd fd A.npz B.npz`")
    reference, generated = (a, fb) if a.is_stats else (b, fa) if b.is_stats else (None, fb)
    if reference is not None:
        metric.use_reference(GaussianStats.load(reference.path), source=str(reference.path))
    else:
        metric.update_features(fa, real=True)
    metric.update_features(generated, real=False)
    return metric


def compute_score(request: ScoreRequest, extractor: nn.Module, a: Source, b: Source, fa: Optional[torch.Tensor],
                  fb: Optional[torch.Tensor], ci: Optional[float], n_boot: int, seed: int,
                  plot_dir: Optional[Path] = None) -> dict[str, Any]:
    """One score's values (and interval) from the two sides' features."""
    from facefd.metrics.extractors import LOGITS_WIDTH
    from facefd.metrics.kernels import authpct, inception_score

    width = None
    if getattr(extractor, "logits", False):  # the Inception's pool features and logits from one pass
        width = extractor.num_features - LOGITS_WIDTH
        view: nn.Module = FeatureColumns(width, extractor.layer_fingerprint, getattr(extractor, "card", {}))
    else:
        view = extractor
    pool_a = fa[:, :width] if (width and fa is not None) else fa
    pool_b = fb[:, :width] if (width and fb is not None) else fb
    out: dict[str, Any] = {}
    if request.score == "is":
        mean, std = inception_score(fb[:, width:])
        return {"value": mean, "std": std, "splits": 10}
    if request.score == "authpct":
        return {"value": authpct(pool_a, pool_b)}
    if request.score == "identity_leak":
        from facefd.evaluation.plots import identity_pairs_grid
        from facefd.metrics.kernels import identity_leak

        result = identity_leak(pool_a, pool_b)
        if plot_dir is not None and result["closest"]:
            png = identity_pairs_grid([(b.files[g], a.files[r], d) for g, r, d in result["closest"]], result["threshold"],
                                      Path(plot_dir) / "identity_leak_pairs.png")
            result["pairs_png"] = str(png)
        return result
    if request.score == "cmmd":
        from facefd.metrics.mmd import CMMD_SCALE, CMMD_SIGMA, mmd_rbf

        unit = [x.double() / x.double().norm(dim=1, keepdim=True).clamp_min(1e-12) for x in (pool_a, pool_b)]
        return {"value": mmd_rbf(unit[0], unit[1], CMMD_SIGMA, CMMD_SCALE), "sigma": CMMD_SIGMA, "scale": CMMD_SCALE}
    largest = max(len(x) for x in (pool_a, pool_b) if x is not None)
    metric = frechet_metric(view, a, b, pool_a, pool_b, reservoir=largest if (ci or request.needs == "features") else 0)
    if request.needs == "stats":
        out["value"] = float(metric.compute())
        if ci:
            interval = metric.compute_ci(n_boot=n_boot, alpha=1 - ci, seed=seed)
            out["interval"] = [interval["low"], interval["high"]]
    elif request.score == "fd_inf":
        result = metric.compute_fd_infinity(seed=seed)
        out.update(value=result["fd_infinity"], slope=result["slope"])
    elif request.score == "kid":
        result = metric.compute_kid(seed=seed)
        out.update(value=result["kid_mean"], std=result["kid_std"], subsets=100,
                   subset_size=min(1000, len(pool_a), len(pool_b)))
    elif request.score == "prdc":
        out.update(metric.compute_prdc(k=5), k=5)
        out["value"] = {k: out.pop(k) for k in ("precision", "recall", "density", "coverage")}
    return out


def describe_extractor(entry: str, module: nn.Module) -> dict[str, Any]:
    """What the JSON records of an extractor: its entry, fingerprint and card."""
    from facefd.models.extractor import module_fingerprint

    card = getattr(module, "card", None) or {}
    return {"entry": entry, "fingerprint": module_fingerprint(module), "card": json.loads(json.dumps(card, default=str))}


def library_versions() -> dict[str, str]:
    """Versions of the libraries a score depends on (recorded with the scores)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("facefd", "torch", "torchvision", "numpy", "scipy", "torch-fidelity", "timm", "open_clip_torch"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def format_line(request: ScoreRequest, result: dict[str, Any], label: str, ci: Optional[float]) -> str:
    """The printed line of one score: name, value(s), interval, and the features it used."""
    value = result["value"]
    if isinstance(value, dict):
        text = "  ".join(f"{k} {v:.6f}" for k, v in value.items())
    else:
        text = f"{value:.6f}" if request.score not in ("kid",) else f"{value:.8f}"
    if request.score == "identity_leak":
        text = f"{value:.4f} ({result['leaked']} of {result['faces']} generated faces within {result['threshold']} " \
               f"of a reference face; {result['no_face_generated']} without a face)"
        if "pairs_png" in result:
            text += f", closest pairs: {result['pairs_png']}"
    if "std" in result:
        text += f" ± {result['std']:.6g}"
    if "interval" in result:
        text += f"  [{100 * ci:g}% CI {result['interval'][0]:.6f}, {result['interval'][1]:.6f}]"
    return f"{request.title}: {text}  ({label})"


def score_folders(a: str | Path, b: str | Path, metrics: str, weights: Optional[dict[str, str]] = None,
                  num_samples: Optional[int] = None, seed: int = 0, ci: Optional[float] = None, n_boot: int = 200,
                  json_path: Optional[str | Path] = None, cache_dir: Optional[str | Path] = None,
                  batch_size: int = 50, num_workers: int = 0, device: str = "auto", skip_bad_images: bool = False,
                  trust_code: bool = False, fdd_extractor: Optional[str] = None, devices: int = 1,
                  echo: Any = print) -> dict[str, Any]:
    """Compute every requested score between ``a`` (reference) and ``b`` (generated).

    Args:
        a: the reference folder (or a statistics ``.npz`` where the scores need only statistics).
        b: the generated folder (or ``.npz``, likewise).
        metrics: ``--metrics`` text (see :func:`parse_metrics`).
        weights: ``{"inception": FILE}``: a local weights file instead of the fetched one.
        num_samples: a seeded sample of at most this many images per folder (recorded in the output).
        seed: the sample's and the bootstrap's seed.
        ci: the bootstrap interval's confidence (0.95) for the Fréchet scores; ``None``: none.
        n_boot: bootstrap resamples.
        json_path: also write everything (values, intervals, counts, the sample, extractor fingerprints,
            library versions) here, atomically.
        cache_dir: the feature cache (default ``~/.cache/facefd/features``).
        batch_size: images per forward pass.
        num_workers: data loader workers.
        device: ``auto``, ``cpu``, ``cuda``...
        skip_bad_images: report unreadable images and go on.
        trust_code: let an extractor card name code outside the allow-list.
        fdd_extractor: the ``fdd`` score's extractor file.
        devices: extract in this many processes through Lightning (GPUs, or CPU processes with ``device="cpu"``).
        echo: where the score lines go.

    Returns:
        The JSON document as a dict.

    Example:
        >>> result = score_folders("real/", "generated/", "fid,kid,prdc", json_path="scores.json")  # doctest: +SKIP
        FID: 12.345678  (inception-fid 6726825d...)
    """
    from facefd.utils.device import resolve_device
    from facefd.utils.files import atomic_path

    from facefd.models.distributed_extraction import check_parallel_options

    requests = parse_metrics(metrics, weights, fdd_extractor)
    check_parallel_options(devices)
    if ci is not None and not 0 < ci < 1:
        raise UserError(f"--ci {ci}: give a confidence between 0 and 1, e.g. 0.95")
    if json_path is not None and Path(json_path).is_dir():
        raise UserError(f"--json {json_path} is a folder; give a file name")
    src_a, src_b = open_sources(a, b, requests, num_samples, seed, skip_bad_images)
    if json_path is not None:  # the JSON's folder (and the identity pairs PNG beside it), made before any work
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    extractors = build_score_extractors(requests, trust_code)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    described = {entry: describe_extractor(entry, module) for entry, module in extractors.items()}
    features: dict[tuple[str, str], Optional[torch.Tensor]] = {}
    for entry, module in extractors.items():
        label = f"{entry.split('@')[0]} {described[entry]['fingerprint'][:8]}"
        for side, source in (("A", src_a), ("B", src_b)):
            features[entry, side] = None if source.is_stats else features_of(
                module, source, label, cache, batch_size=batch_size, num_workers=num_workers, device=dev,
                devices=devices)
    results: dict[str, Any] = {}
    for request in requests:
        module = extractors[request.extractor]
        result = compute_score(request, module, src_a, src_b, features[request.extractor, "A"],
                               features[request.extractor, "B"], ci, n_boot, seed,
                               plot_dir=Path(json_path).parent if json_path else Path.cwd())
        label = f"{request.extractor.split('@')[0]} features, {described[request.extractor]['fingerprint'][:8]}"
        results[request.key] = {**result, "features": request.extractor,
                                "fingerprint": described[request.extractor]["fingerprint"]}
        echo(format_line(request, result, label, ci))
    document = {
        "a": str(src_a.path), "b": str(src_b.path), "scores": results,
        "counts": {side: (len(s.files) if not s.is_stats else None) for side, s in (("a", src_a), ("b", src_b))},
        "devices": devices,
        "sample": {"num_samples": num_samples, "seed": seed,
                   **{side: [str(p.relative_to(s.path)) for p in s.files] for side, s in (("a", src_a), ("b", src_b))}},
        "ci": ci, "n_boot": n_boot if ci else None,
        "extractors": list(described.values()), "versions": library_versions(),
    }
    if json_path is not None:
        with atomic_path(Path(json_path)) as tmp:
            Path(tmp).write_text(json.dumps(document, indent=1, default=str), encoding="utf-8")
    return document


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/facefd/features`` (``~/.cache/facefd/features``)."""
    import os

    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facefd" / "features"
