"""``task=probe_table data.root=DIR extractors=[...] heads=[linear,mlp]``: Table 1 of the FDD paper."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from omegaconf import DictConfig

from facefd.evaluation.tasks.common import extract_kwargs, plain, write_sample_record
from facefd.utils.errors import ConfigError


def run(cfg: DictConfig) -> dict[str, str]:
    """Train the heads on each extractor's frozen features and print the table."""
    from facefd.data.datamodule import FaceImageDataModule
    from facefd.evaluation.probe_table import run_probe_table, write_probe_table

    if not cfg.data.get("root"):
        raise ConfigError("task=probe_table needs data.root=<labelled image folder>")
    from facefd.metrics.extractors import check_extractor_entry

    for entry in plain(cfg.extractors):  # every entry checked before the first one loads
        check_extractor_entry(entry)
    p = cfg.probe
    parallel = {k: v for k, v in extract_kwargs(cfg).items() if k in ("devices", "accelerator", "strategy")}
    images = partial(FaceImageDataModule, root=cfg.data.root, attributes=plain(cfg.attributes),
                     attributes_file=cfg.data.attributes_file, partition_file=cfg.data.partition_file,
                     val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction, seed=cfg.seed,
                     skip_bad_images=cfg.data.skip_bad_images, num_workers=cfg.num_workers,
                     num_samples=cfg.get("num_samples"))
    optimizer = {"target": "torch.optim.AdamW", "kwargs": {"lr": p.lr, "weight_decay": p.weight_decay}}
    results = run_probe_table(
        images, plain(cfg.extractors), list(cfg.heads), p.cache_dir, Path(cfg.paths.output_dir) / "heads",
        max_epochs=p.max_epochs, extra_test_root=cfg.get("extra_test_root"), extra_test_name=cfg.extra_test_name,
        module_kwargs=dict(hidden_dim=p.hidden_dim, depth=p.depth, pos_weight=p.pos_weight, optimizer=optimizer),
        feature_kwargs=dict(batch_size=p.batch_size, extract_batch_size=cfg.batch_size, extract_num_workers=cfg.num_workers,
                            parallel=parallel),
        input_size=cfg.get("input_size"),
    )
    paths = write_probe_table(results, cfg.out or cfg.paths.output_dir, cfg.extra_test_name)
    paths["sample"] = write_sample_record(cfg)
    print(paths["md"].read_text())
    return {k: str(v) for k, v in paths.items()}
