"""``task=anonymization original=DIR anonymized=DIR``: Re-ID@K / mAP, attribute preservation and the
Fréchet distance of an anonymized folder."""
from __future__ import annotations

from omegaconf import DictConfig

from facefd.evaluation.tasks.common import extract_kwargs, out_dir, plain, predictor_factory, require


def run(cfg: DictConfig) -> dict:
    """Evaluate the anonymized folder against its originals and print the report."""
    from facefd.evaluation.anonymization import markdown, run_anonymization_eval

    require(cfg, "original", "anonymized")
    report = run_anonymization_eval(
        cfg.original, cfg.anonymized, out_dir(cfg), embedders=plain(cfg.extractors),
        metrics=plain(cfg.fd_extractors or []), predictor=predictor_factory(cfg), identities=cfg.identities,
        ks=list(cfg.reid_ks), cache_dir=cfg.cache_dir, grid_rows=cfg.grid_rows, extract_kwargs=extract_kwargs(cfg),
        num_samples=cfg.get("num_samples"), seed=cfg.seed)
    print(markdown(report))
    return report
