"""Evaluation tasks behind ``python evaluate.py task=...``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from hydra.utils import instantiate
from omegaconf import DictConfig

from facefd.evaluation.reid import reid  # noqa: E402,F401  (public: facefd.evaluation.reid)
from facefd.utils.entry import entry_point
from facefd.utils.checks import check_statistics_source, check_writable
from facefd.utils.errors import ConfigError

log = logging.getLogger(__name__)


def _require(cfg: DictConfig, *keys: str) -> None:
    from omegaconf import OmegaConf

    missing = [k for k in keys if OmegaConf.select(cfg, k) in (None, "")]
    if missing:
        raise ConfigError(f"task={cfg.task} needs {', '.join(f'{k}=...' for k in missing)}")


def _export(cfg: DictConfig) -> str:
    from facefd.models.dino.export import export_checkpoint

    _require(cfg, "ckpt_path", "out")
    path = export_checkpoint(cfg.ckpt_path, cfg.out)
    print(path)
    return str(path)


def _loader_kwargs(cfg: DictConfig) -> dict:
    return dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers, skip_bad_images=cfg.data.skip_bad_images)


def _stats(cfg: DictConfig) -> str:
    from facefd.evaluation.folder_stats import folder_statistics

    if not cfg.data.get("root"):
        raise ConfigError("task=stats needs data.root=<image folder>")
    _require(cfg, "out")
    check_statistics_source(cfg.data.root)  # before the extractor loads
    check_writable(cfg.out)
    metric = instantiate(cfg.metric)
    stats = folder_statistics(metric, cfg.data.root, max_images=cfg.get("num_samples"), **_loader_kwargs(cfg))
    path = metric.save_reference(cfg.out, metadata=stats.metadata)  # the folder's stats are its real set
    print(f"{path}: {stats.count} images, {stats.mean.shape[0]}-d features")
    return str(path)


def _fd(cfg: DictConfig) -> dict:
    from facefd.evaluation.folder_stats import distance

    _require(cfg, "a", "b")
    for source in (cfg.a, cfg.b):
        check_statistics_source(source)
    if cfg.get("out"):
        check_writable(cfg.out)
    metric = instantiate(cfg.metric)
    result = distance(metric, cfg.a, cfg.b, max_images=cfg.get("num_samples"), **_loader_kwargs(cfg))
    print(f"FD = {result['fd']:.6g}  (n_a = {result['n_a']}, n_b = {result['n_b']})")
    if cfg.get("out"):
        from facefd.utils.files import write_json

        write_json(cfg.out, result)
    return result


def _plain(value: Any) -> Any:
    from facefd.models.backbone import plain

    return plain(value)


def _probe_table(cfg: DictConfig) -> dict:
    from functools import partial

    from facefd.data.datamodule import FaceImageDataModule
    from facefd.evaluation.probe_table import run_probe_table, write_probe_table

    if not cfg.data.get("root"):
        raise ConfigError("task=probe_table needs data.root=<labelled image folder>")
    p = cfg.probe
    images = partial(FaceImageDataModule, root=cfg.data.root, attributes=_plain(cfg.attributes),
                     attributes_file=cfg.data.attributes_file, partition_file=cfg.data.partition_file,
                     val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction, seed=cfg.seed,
                     skip_bad_images=cfg.data.skip_bad_images, num_workers=cfg.num_workers)
    optimizer = {"target": "torch.optim.AdamW", "kwargs": {"lr": p.lr, "weight_decay": p.weight_decay}}
    results = run_probe_table(
        images, _plain(cfg.extractors), list(cfg.heads), p.cache_dir, Path(cfg.paths.output_dir) / "heads",
        max_epochs=p.max_epochs, extra_test_root=cfg.get("extra_test_root"), extra_test_name=cfg.extra_test_name,
        module_kwargs=dict(hidden_dim=p.hidden_dim, depth=p.depth, pos_weight=p.pos_weight, optimizer=optimizer),
        feature_kwargs=dict(batch_size=p.batch_size, extract_batch_size=cfg.batch_size, extract_num_workers=cfg.num_workers),
        input_size=cfg.get("input_size"),
    )
    paths = write_probe_table(results, cfg.out or cfg.paths.output_dir, cfg.extra_test_name)
    print(paths["md"].read_text())
    return {k: str(v) for k, v in paths.items()}


def _out_dir(cfg: DictConfig) -> Path:
    return Path(cfg.out or cfg.paths.output_dir)


def _extract_kwargs(cfg: DictConfig) -> dict:
    return dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers)


def _benchmark(cfg: DictConfig) -> list:
    from facefd.evaluation.benchmark import build_sets, run_benchmark, summary_table, write_benchmark

    if not cfg.reference.get("root"):
        raise ConfigError("task=benchmark needs reference.root=<reference image folder>")
    chosen = list(cfg.perturb) if cfg.get("perturb") is not None else list(cfg.perturbations)
    unknown = [n for n in chosen if n not in cfg.perturbations]
    if unknown:
        raise ConfigError(f"perturb={unknown} are not defined; perturbations has {list(cfg.perturbations)}")
    perturbations = {n: instantiate(cfg.perturbations[n]) for n in chosen}
    reference, sets = build_sets(cfg.reference.root, list(cfg.sets), perturbations, cfg.get("num_samples"),
                                 cfg.seed, cfg.data.skip_bad_images, cfg.heldout)
    rows = run_benchmark(reference, sets, _plain(cfg.metrics), cfg.cache_dir, bootstrap=cfg.bootstrap, alpha=cfg.alpha,
                         rescale_set=cfg.rescale.set, rescale_values=_plain(cfg.rescale.ratios), seed=cfg.seed,
                         extract_kwargs=_extract_kwargs(cfg))
    paths = write_benchmark(rows, _out_dir(cfg))
    print(summary_table(rows))
    print(f"written: {', '.join(str(p) for p in paths.values())}")
    return rows


def _correlate(cfg: DictConfig) -> dict:
    from facefd.evaluation.correlate import format_table, run_correlate

    _require(cfg, "ratings", "benchmark")
    results = run_correlate(cfg.ratings, cfg.benchmark, _out_dir(cfg), cfg.correlate_value)
    print(format_table(results))
    return results


def _neighbors(cfg: DictConfig) -> dict:
    from facefd.evaluation.image_sets import ImageSet, folder_sample, set_features
    from facefd.evaluation.neighbors import NeighborResult, knn_search, write_neighbors
    from facefd.evaluation.benchmark import build_extractors
    from facefd.models.probe.features import FeatureCache

    _require(cfg, "queries", "gallery")
    queries = ImageSet("queries", folder_sample(cfg.queries, skip_bad_images=cfg.data.skip_bad_images))
    gallery = ImageSet("gallery", folder_sample(cfg.gallery, skip_bad_images=cfg.data.skip_bad_images))
    cache = FeatureCache(cfg.cache_dir)
    results = []
    for label, extractor in build_extractors(_plain(cfg.metrics)):
        q = set_features(extractor, queries, cache, **_extract_kwargs(cfg))
        g = set_features(extractor, gallery, cache, **_extract_kwargs(cfg))
        d, i = knn_search(q, g, cfg.k, cfg.distance, backend=cfg.search_backend)
        results.append(NeighborResult(label, d, i))
    paths = write_neighbors(queries.paths, gallery.paths, results, _out_dir(cfg), cfg.distance, cfg.thumb, cfg.grid_rows)
    print(f"written: {', '.join(str(p) for p in paths.values())}")
    return {k: str(v) for k, v in paths.items()}


def _subgroups(cfg: DictConfig) -> list:
    from facefd.evaluation.subgroups import run_subgroups, write_subgroups

    if not cfg.reference.get("root") or not cfg.generated.get("root"):
        raise ConfigError("task=subgroups needs reference.root=<folder> and generated.root=<folder>")
    predictor = None
    if cfg.predictor.get("heads"):
        from facefd.models.probe.predictor import AttributePredictor

        _require(cfg, "predictor.extractor")
        predictor = lambda: AttributePredictor(cfg.predictor.extractor, cfg.predictor.heads)  # noqa: E731
    rows = run_subgroups(cfg.reference.root, cfg.generated.root, list(cfg.by), _plain(cfg.metrics), cfg.cache_dir,
                         num_samples=cfg.get("num_samples"), bootstrap=cfg.bootstrap, alpha=cfg.alpha,
                         min_count=cfg.min_count, seed=cfg.seed, categories_file=cfg.categories_file,
                         predictor=predictor, skip_bad_images=cfg.data.skip_bad_images,
                         extract_kwargs=_extract_kwargs(cfg))
    paths = write_subgroups(rows, _out_dir(cfg))
    for r in rows:
        fd = f"{r.fd:.4g}" if r.fd is not None else r.note
        print(f"{r.metric:8s} {r.attribute}: {r.group:24s} FD = {fd}  (n = {r.n_reference} / {r.n_generated}, "
              f"share {r.share_reference:.2f} / {r.share_generated:.2f})")
    print(f"written: {', '.join(str(p) for p in paths.values())}")
    return rows


def _curve(cfg: DictConfig) -> dict:
    from facefd.evaluation.curve import run_curve

    _require(cfg, "run")
    paths = run_curve(cfg.run, _out_dir(cfg), _plain(cfg.columns) if cfg.get("columns") else None)
    print(f"written: {', '.join(str(p) for p in paths.values())}")
    return {k: str(v) for k, v in paths.items()}


def _anonymization(cfg: DictConfig) -> dict:
    from facefd.evaluation.anonymization import markdown, run_anonymization_eval

    _require(cfg, "original", "anonymized")
    predictor = None
    if cfg.predictor.get("heads"):
        from facefd.models.probe.predictor import AttributePredictor

        _require(cfg, "predictor.extractor")
        predictor = lambda: AttributePredictor(cfg.predictor.extractor, cfg.predictor.heads)  # noqa: E731
    report = run_anonymization_eval(
        cfg.original, cfg.anonymized, _out_dir(cfg), embedders=_plain(cfg.embedders),
        metrics=_plain(cfg.anonymization_metrics or []), predictor=predictor, identities=cfg.identities,
        ks=list(cfg.reid_ks), cache_dir=cfg.cache_dir, grid_rows=cfg.grid_rows, extract_kwargs=_extract_kwargs(cfg))
    print(markdown(report))
    return report


TASKS: dict[str, Callable[[DictConfig], Any]] = {
    "export": _export, "stats": _stats, "fd": _fd, "probe_table": _probe_table, "benchmark": _benchmark,
    "correlate": _correlate, "neighbors": _neighbors, "subgroups": _subgroups, "curve": _curve,
    "anonymization": _anonymization,
}


@entry_point
def run(cfg: DictConfig) -> Any:
    if cfg.task not in TASKS:
        raise ConfigError(f"unknown task={cfg.task!r}; available: {sorted(TASKS)}")
    return TASKS[cfg.task](cfg)
