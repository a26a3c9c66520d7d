"""What several evaluation tasks read from their config in the same way."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from facefd.utils.errors import ConfigError


def require(cfg: DictConfig, *keys: str) -> None:
    """Raise :class:`ConfigError` naming every key of ``keys`` that the command line left empty."""
    missing = [k for k in keys if OmegaConf.select(cfg, k) in (None, "")]
    if missing:
        raise ConfigError(f"task={cfg.task} needs {', '.join(f'{k}=...' for k in missing)}")


def plain(value: Any) -> Any:
    """A config value as plain Python lists and dicts."""
    from facefd.models.backbone import plain as to_plain

    return to_plain(value)


def out_dir(cfg: DictConfig) -> Path:
    """The task's output folder: ``out=`` or the run folder."""
    return Path(cfg.out or cfg.paths.output_dir)


def extract_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """Batch size, workers and processes of feature extraction: ``trainer=ddp_sim`` (2 CPU processes),
    ``trainer=ddp`` (one process per GPU) or ``trainer.devices=N`` run it in N processes through Lightning."""
    from facefd.models.distributed_extraction import check_parallel_options, parallel_options

    parallel = parallel_options(cfg.get("trainer"))
    check_parallel_options(parallel["devices"], parallel.pop("num_nodes"), parallel["strategy"])
    return dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers, **parallel)


def loader_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """What a folder's statistics read: extraction, the bad-image policy, the seeded sample, the cache."""
    return dict(extract_kwargs(cfg), skip_bad_images=cfg.data.skip_bad_images, num_samples=cfg.get("num_samples"),
                seed=cfg.seed, cache_dir=cfg.get("cache_dir"))


def write_sample_record(cfg: DictConfig, counts: Optional[dict[str, int]] = None) -> Path:
    """``sample.json`` in the task's output folder: what ``num_samples`` and ``seed`` drew (the same
    seeded sample in every task, :func:`facefd.data.images.seeded_sample`), and the images each set used."""
    from facefd.utils.files import write_json

    record = {"task": cfg.task, "num_samples": cfg.get("num_samples"), "seed": cfg.get("seed"),
              "sample": "seeded uniform sample without replacement, at most num_samples images per folder",
              "images": counts or {}}
    return write_json(out_dir(cfg) / "sample.json", record)


def predictor_factory(cfg: DictConfig) -> Optional[Callable[[], Any]]:
    """A factory of the ``predictor:`` attribute predictor when heads are given, else ``None``."""
    if not cfg.predictor.get("heads"):
        return None
    require(cfg, "predictor.extractor")

    def build() -> Any:
        from facefd.models.probe.predictor import AttributePredictor

        return AttributePredictor(cfg.predictor.extractor, cfg.predictor.heads)

    return build


def print_written(paths: dict[str, Path]) -> dict[str, str]:
    """Print and return the written files."""
    print(f"written: {', '.join(str(p) for p in paths.values())}")
    return {k: str(v) for k, v in paths.items()}
