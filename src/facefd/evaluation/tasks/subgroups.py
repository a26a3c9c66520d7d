"""``task=subgroups reference.root=DIR generated.root=DIR by=[...] extractors=[...]``: per-group distances."""
from __future__ import annotations

from omegaconf import DictConfig

from facefd.evaluation.tasks.common import extract_kwargs, out_dir, plain, write_sample_record, predictor_factory
from facefd.utils.errors import ConfigError


def run(cfg: DictConfig) -> list:
    """The distance of each subgroup of the generated set to the same subgroup of the reference."""
    from facefd.evaluation.subgroups import run_subgroups, write_subgroups

    if not cfg.reference.get("root") or not cfg.generated.get("root"):
        raise ConfigError("task=subgroups needs reference.root=<folder> and generated.root=<folder>")
    rows = run_subgroups(cfg.reference.root, cfg.generated.root, list(cfg.by), plain(cfg.extractors), cfg.cache_dir,
                         num_samples=cfg.get("num_samples"), bootstrap=cfg.bootstrap, alpha=cfg.alpha,
                         min_count=cfg.min_count, seed=cfg.seed, categories_file=cfg.categories_file,
                         predictor=predictor_factory(cfg), skip_bad_images=cfg.data.skip_bad_images,
                         extract_kwargs=extract_kwargs(cfg))
    paths = write_subgroups(rows, out_dir(cfg))
    paths["sample"] = write_sample_record(cfg)
    for r in rows:
        fd = f"{r.fd:.4g}" if r.fd is not None else r.note
        print(f"{r.metric:8s} {r.attribute}: {r.group:24s} FD = {fd}  (n = {r.n_reference} / {r.n_generated}, "
              f"share {r.share_reference:.2f} / {r.share_generated:.2f})")
    print(f"written: {', '.join(str(p) for p in paths.values())}")
    return rows
