"""The FDD paper's Table 1: attribute accuracy of probe heads on each extractor's frozen features.

Rows are extractor + head, columns are attributes (test-split accuracy in %), plus one column per
attribute of an independently labelled test folder when one is given. Written as CSV and Markdown
(and JSON with AUROC and sample counts), atomically.
"""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import lightning.pytorch as pl
from torch import nn

from facefd.data.datamodule import FaceImageDataModule
from facefd.models.probe.feature_data import ProbeFeatureDataModule
from facefd.metrics.extractors import build_extractor, parse_extractor_entry
from facefd.models.probe.knn import knn_attribute_accuracy
from facefd.models.probe.module import ProbeModule
from facefd.utils.files import write_json, write_text

log = logging.getLogger(__name__)

HEADS = ("linear", "mlp", "knn")


@dataclass
class ProbeResult:
    extractor: str
    head: str
    accuracy: dict[str, float]                      # attribute -> test accuracy (0..1)
    auroc: dict[str, float] = field(default_factory=dict)
    extra_accuracy: dict[str, float] = field(default_factory=dict)  # independent test folder


def _fit_head(dm: ProbeFeatureDataModule, head: str, max_epochs: int, module_kwargs: dict[str, Any],
              workdir: Path) -> dict[str, float]:
    model = ProbeModule(head=head, **module_kwargs)
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=workdir, monitor="val/acc", mode="max", save_top_k=1)
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator="auto", devices=1, logger=False, callbacks=[ckpt],
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, ckpt_path="best" if ckpt.best_model_path else None, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def _knn(dm: ProbeFeatureDataModule, extra_name: str) -> dict[str, float]:
    train, test = dm.datasets["train"], dm.datasets["test"]
    acc = knn_attribute_accuracy(train.features, train.attributes, test.features, test.attributes)
    out = {f"test/acc/{n}": float(a) for n, a in zip(dm.attribute_names, acc)}
    if "extra_test" in dm.datasets:
        extra = dm.datasets["extra_test"]
        for j, name in enumerate(dm.attribute_names):
            known = ~extra.attributes[:, j].isnan()
            if known.any():
                a = knn_attribute_accuracy(train.features, train.attributes[:, j:j + 1], extra.features[known],
                                           extra.attributes[known, j:j + 1])
                out[f"test_{extra_name}/acc/{name}"] = float(a[0])
    return out


def run_probe_table(images: Callable[[], FaceImageDataModule], extractors: Sequence[Any], heads: Sequence[str],
                    cache_dir: str | Path, workdir: str | Path, max_epochs: int = 100,
                    module_kwargs: Optional[dict[str, Any]] = None, extra_test_root: Optional[str] = None,
                    extra_test_attributes_file: str = "auto", extra_test_name: str = "independent",
                    feature_kwargs: Optional[dict[str, Any]] = None,
                    input_size: Optional[int] = None) -> list[ProbeResult]:
    """Train every head on every extractor's cached features; return one result per row.

    ``input_size`` is the side ``timm:`` / ``random:`` extractors see (None: the model's default, 224 for a
    ResNet); a DINO card carries its own. Set it to the DINO run's crop size so that a random network
    row is the run's initial network seeing the same pixels, not the images upsampled."""
    unknown = [h for h in heads if h not in HEADS]
    if unknown:
        raise ValueError(f"unknown head(s) {unknown}; choose from {HEADS}")
    results = []
    for entry in extractors:
        label, name, path = parse_extractor_entry(entry)
        extractor: nn.Module = build_extractor(name, path, input_size=input_size)
        dm = ProbeFeatureDataModule(images(), extractor, str(cache_dir), extra_test_root=extra_test_root,
                                    extra_test_attributes_file=extra_test_attributes_file,
                                    extra_test_name=extra_test_name, **(feature_kwargs or {}))
        dm.prepare_data()
        dm.setup("fit")
        for head in heads:
            log.info("probe table: %s + %s", label, head)
            if head == "knn":
                metrics = _knn(dm, extra_test_name)
            else:
                kwargs = dict(module_kwargs or {}, extra_test_name=extra_test_name)
                metrics = _fit_head(dm, head, max_epochs, kwargs, Path(workdir) / f"{label}_{head}".replace(":", "_"))
            acc = {n: metrics[f"test/acc/{n}"] for n in dm.attribute_names if f"test/acc/{n}" in metrics}
            auroc = {n: metrics[f"test/auroc/{n}"] for n in dm.attribute_names if f"test/auroc/{n}" in metrics}
            extra = {n: metrics[k] for n in dm.attribute_names
                     if (k := f"test_{extra_test_name}/acc/{n}") in metrics}
            results.append(ProbeResult(label, head, acc, auroc, extra))
    return results


#: The FDD paper's names of its Table 1 feature spaces.
TABLE1_NAMES = {"fid": "Inception", "inception": "Inception", "dino_imagenet": "DINO(I)", "fdd": "DINO(F)"}


def table_rows(results: Sequence[ProbeResult], extra_test_name: str = "independent") -> tuple[list[str], list[list[str]]]:
    """Header and rows of the Table-1 layout, accuracy in % with one decimal."""
    attrs = list(dict.fromkeys(a for r in results for a in r.accuracy))
    extra = list(dict.fromkeys(a for r in results for a in r.extra_accuracy))
    header = ["extractor", "head", *attrs, *(f"{a} ({extra_test_name})" for a in extra)]
    rows = []
    for r in results:
        cells = [TABLE1_NAMES.get(r.extractor, r.extractor), r.head]
        cells += [f"{100 * r.accuracy[a]:.1f}" if a in r.accuracy else "" for a in attrs]
        cells += [f"{100 * r.extra_accuracy[a]:.1f}" if a in r.extra_accuracy else "" for a in extra]
        rows.append(cells)
    return header, rows


def write_probe_table(results: Sequence[ProbeResult], out_dir: str | Path,
                      extra_test_name: str = "independent") -> dict[str, Path]:
    """``probe_table.csv``, ``probe_table.md`` (Table 1 layout) and ``probe_table.json`` (all numbers)."""
    out = Path(out_dir)
    header, rows = table_rows(results, extra_test_name)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    md = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    paths = {"csv": out / "probe_table.csv", "md": out / "probe_table.md", "json": out / "probe_table.json"}
    write_text(paths["csv"], buf.getvalue())
    write_text(paths["md"], "Accuracy (%) on the test split\n\n" + "\n".join(md) + "\n")
    write_json(paths["json"], [r.__dict__ for r in results])
    return paths
