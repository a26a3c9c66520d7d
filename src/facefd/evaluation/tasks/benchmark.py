"""``task=benchmark reference.root=DIR sets=[...] extractors=[...]``: Fig. 1 of the FDD paper."""
from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from facefd.evaluation.tasks.common import extract_kwargs, out_dir, plain, write_sample_record
from facefd.utils.errors import ConfigError


def run(cfg: DictConfig) -> list:
    """Distances of every set to the reference, per extractor; tables and a chart."""
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
    rows = run_benchmark(reference, sets, plain(cfg.extractors), cfg.cache_dir, bootstrap=cfg.bootstrap,
                         alpha=cfg.alpha, rescale_set=cfg.rescale.set, rescale_values=plain(cfg.rescale.ratios),
                         seed=cfg.seed, extract_kwargs=extract_kwargs(cfg))
    paths = write_benchmark(rows, out_dir(cfg))
    paths["sample"] = write_sample_record(cfg)
    print(summary_table(rows))
    print(f"written: {', '.join(str(p) for p in paths.values())}")
    return rows
