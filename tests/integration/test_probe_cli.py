"""Probe entry points as a user runs them: a train.py -m sweep over heads on cached features, and
evaluate.py task=probe_table (Table 1 of the FDD paper) parsed back."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from conftest import CONF
from facefd.data.attributes import read_attribute_table, read_partition_file
from facefd.data.images import load_rgb
from facefd.data.tensors import pil_to_tensor
from facefd.metrics.extractors import parse_extractor_entry
from runs import independent_folder
from runs import run_inprocess

POOLED = "{_target_:helpers.PooledPixels}"


def test_sweep_over_heads_extracts_features_once(tmp_path, probe_root):
    cache = tmp_path / "cache"
    proc = run_inprocess(["train.py", "-m", "model=probe", "probe.head=linear,mlp", "data=faces", f"data.root={probe_root}",
                 "data.num_workers=0", f"probe.extractor={POOLED}", f"probe.cache_dir={cache}", "trainer.max_epochs=5",
                 "features.extract_num_workers=0", "callbacks.rich_progress_bar=null",
                 f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted((tmp_path / "sweep").glob("[0-9]*"))
    assert [j.name for j in jobs] == ["0", "1"]
    for job in jobs:
        assert (job / "probe" / "probe_heads.safetensors").exists()
    first, second = ((job / "train.log").read_text() for job in jobs)
    assert first.count("extracted") == 3  # train, val, test
    assert second.count("cached features") == 3 and "extracted" not in second
    assert len(list(cache.glob("*.safetensors"))) == 3


def _knn_accuracy(bank, bank_labels, queries, query_labels, k=20, temperature=0.07):
    """DINO eval_knn written out for one attribute at a time: cosine similarity, top k, exp(s/T) votes."""
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    correct = 0
    for q, truth in zip(queries, query_labels):
        sims = bank @ q
        top = np.argsort(-sims, kind="stable")[:k]
        w = np.exp(sims[top] / temperature)
        p = (w * bank_labels[top]).sum() / w.sum()
        correct += int((p > 0.5) == truth)
    return correct / len(queries)


def test_probe_table_cli_writes_table_one(tmp_path, probe_root):
    independent = independent_folder(tmp_path)
    out = tmp_path / "table"
    proc = run_inprocess(["evaluate.py", "task=probe_table", f"data.root={probe_root}", f"extractors=[{POOLED},random:test_resnet]",
                 "heads=[linear,knn]", "attributes=[Blond_Hair,Male]", f"extra_test_root={independent}",
                 "probe.max_epochs=20", f"probe.cache_dir={tmp_path / 'cache'}", f"out={out}", "num_workers=0"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "probe_table.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["extractor", "head", "Blond_Hair", "Male", "Male (independent)"]
    assert [r[:2] for r in rows[1:]] == [["PooledPixels", "linear"], ["PooledPixels", "knn"],
                                         ["random:test_resnet", "linear"], ["random:test_resnet", "knn"]]
    results = json.loads((out / "probe_table.json").read_text())
    for row, res in zip(rows[1:], results):
        assert row[2] == f"{100 * res['accuracy']['Blond_Hair']:.1f}"
        assert row[4] == f"{100 * res['extra_accuracy']['Male']:.1f}"
        assert all(0.0 <= float(v) <= 100.0 for v in row[2:])
    md = (out / "probe_table.md").read_text().strip().splitlines()
    assert md[2].startswith("| extractor | head | Blond_Hair") and len(md) == 2 + 2 + 4

    # The k-NN row against DINO's eval_knn written out here, on pooled pixels computed here.
    table = read_attribute_table(probe_root / "list_attr_celeba.txt")
    part = read_partition_file(probe_root / "list_eval_partition.txt")
    images = sorted((probe_root / "images").glob("*.png"))

    def pooled(paths):
        import torch

        x = torch.stack([pil_to_tensor(load_rgb(p), 32) for p in paths])
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1).numpy()

    split = {s: [p for p in images if part[p.name] == s] for s in (0, 2)}
    col = table.names.index("Blond_Hair")
    labels = {s: np.array([table.values[table.lookup(p.name)][col] for p in split[s]]) for s in split}
    expected = _knn_accuracy(pooled(split[0]), labels[0], pooled(split[2]), labels[2])
    assert results[1]["head"] == "knn"
    assert results[1]["accuracy"]["Blond_Hair"] == pytest.approx(expected, abs=1e-6)


def test_extractor_entries_parse_from_the_command_line():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="evaluate", overrides=[
            "task=probe_table", "extractors=[fdd@/runs/x/extractor.safetensors,timm:resnet50@/w/r50.safetensors,"
            "random:test_vit,inception@pt_inception-2015-12-05-6726825d.pth]"])
    parsed = [parse_extractor_entry(e) for e in cfg.extractors]
    assert parsed == [("fdd", "fdd", "/runs/x/extractor.safetensors"),
                      ("timm:resnet50", "timm:resnet50", "/w/r50.safetensors"),
                      ("random:test_vit", "random:test_vit", None),
                      ("inception", "inception", "pt_inception-2015-12-05-6726825d.pth")]
    assert parse_extractor_entry({"_target_": "helpers.PooledPixels"})[0] == "PooledPixels"


def test_probe_table_input_size_feeds_random_networks_the_same_pixels(tmp_path, probe_root):
    """input_size=32 makes random:test_resnet see the 32 px faces as they are (the DINO run's view), not
    upsampled to timm's 224 px: its k-NN row equals eval_knn on features of the 32 px images computed here."""
    import torch
    import timm

    from facefd.data.datamodule import FaceImageDataModule
    from facefd.evaluation.probe_table import run_probe_table

    images = lambda: FaceImageDataModule(str(probe_root), attributes=["Male"], num_workers=0)  # noqa: E731
    results = {size: run_probe_table(images, ["random:test_resnet"], ["knn"], tmp_path / "cache", tmp_path / "w",
                                     input_size=size, feature_kwargs=dict(extract_num_workers=0))[0]
               for size in (32, None)}

    with torch.random.fork_rng(devices=[]):  # random:<model> is timm's init drawn from seed 0
        torch.manual_seed(0)
        net = timm.create_model("test_resnet", pretrained=False, num_classes=0, zero_init_last=False).eval()
    cfg = timm.data.resolve_data_config({}, model=net)
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    table = read_attribute_table(probe_root / "list_attr_celeba.txt")
    part = read_partition_file(probe_root / "list_eval_partition.txt")
    paths = sorted((probe_root / "images").glob("*.png"))
    split = {s: [p for p in paths if part[p.name] == s] for s in (0, 2)}
    col = table.names.index("Male")

    def feats(ps):
        x = torch.stack([pil_to_tensor(load_rgb(p), 32) for p in ps])
        with torch.no_grad():
            return net((x - mean) / std).double().numpy()

    labels = {s: np.array([table.values[table.lookup(p.name)][col] for p in split[s]]) for s in split}
    expected = _knn_accuracy(feats(split[0]), labels[0], feats(split[2]), labels[2])
    assert results[32].accuracy["Male"] == pytest.approx(expected, abs=1e-6)
    assert results[None].accuracy["Male"] != pytest.approx(expected, abs=1e-6)  # 224 px: other features
