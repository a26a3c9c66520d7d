"""Attribute probes on frozen features: accuracy against chance, metric values against hand-computed
ones, the feature cache, categories, the predictor and the train.py / evaluate.py entry points."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from facefd.data.sample_faces import SAMPLE_ATTRIBUTES
from helpers import ConstantFeatures, PooledPixels

from conftest import compose_train
from facefd.data import FaceImageDataModule
from facefd.data.attributes import CELEBA_ATTRIBUTES, read_attribute_table, read_partition_file
from facefd.models.probe.feature_data import ProbeFeatureDataModule
from facefd.models.probe import AttributePredictor, FeatureCache, HeadsFileError, ProbeModule, save_heads
from runs import independent_folder, write_hair_groups

COLOUR_ATTRIBUTES = ["Black_Hair", "Blond_Hair", "Gray_Hair", "Pale_Skin"]  # visible in pooled pixels


def fit_probe(root, extractor, cache_dir, head="linear", epochs=60, images_kwargs=None, **module_kwargs):
    pl.seed_everything(0)  # head initialisation and batch order do not depend on the tests that ran before
    images = FaceImageDataModule(str(root), num_workers=0, **(images_kwargs or {}))
    dm = ProbeFeatureDataModule(images, extractor, str(cache_dir), extract_num_workers=0, batch_size=64)
    model = ProbeModule(head=head, **module_kwargs)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, dm)
    trainer.test(model, dm, verbose=False)
    return dm, model, {k: float(v) for k, v in trainer.callback_metrics.items()}


def rank_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC: P(score of a positive > score of a negative), ties counting half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def label_split(root: Path, split: int) -> tuple[list[str], np.ndarray]:
    """Labels of one split read straight from the CelebA-style files (independent of the data module)."""
    table = read_attribute_table(root / "list_attr_celeba.txt")
    part = read_partition_file(root / "list_eval_partition.txt")
    rows = [i for i, k in enumerate(table.keys) if part[Path(k).name] == split]
    return table.names, table.values[rows]


def test_linear_probe_beats_chance_and_metrics_match_hand_computation(probe_root, tmp_path):
    dm, model, metrics = fit_probe(probe_root, PooledPixels(), tmp_path / "cache")
    names, test_labels = label_split(probe_root, 2)
    assert dm.attribute_names == names and torch.equal(dm.labels["test"], torch.from_numpy(test_labels))
    with torch.no_grad():
        probs = model.heads(dm.features["test"]).sigmoid().numpy()
    for j, name in enumerate(names):
        expected_acc = float(((probs[:, j] > 0.5) == test_labels[:, j]).mean())
        assert metrics[f"test/acc/{name}"] == pytest.approx(expected_acc, abs=1e-6)
        if 0 < test_labels[:, j].sum() < len(test_labels):  # AUROC is undefined when one class is absent
            assert metrics[f"test/auroc/{name}"] == pytest.approx(rank_auroc(probs[:, j], test_labels[:, j]), abs=1e-4)
    # the test split (12 people) holds both classes of most attributes, so the check above is not vacuous
    assert sum(0 < test_labels[:, j].sum() < len(test_labels) for j in range(len(names))) >= len(names) - 2
    # Features that carry colour: each colour attribute is separated far better than chance (AUROC 0.5),
    # and accuracy removes more than half of the errors of always answering the majority class.
    majority = np.maximum(test_labels.mean(0), 1 - test_labels.mean(0))
    cols = [names.index(n) for n in COLOUR_ATTRIBUTES]
    for name in COLOUR_ATTRIBUTES:
        assert metrics[f"test/auroc/{name}"] > 0.9, name
    accs = np.array([metrics[f"test/acc/{n}"] for n in COLOUR_ATTRIBUTES])
    assert accs.mean() > majority[cols].mean() + 0.5 * (1 - majority[cols].mean())
    assert metrics["test/acc"] == pytest.approx(np.mean([metrics[f"test/acc/{n}"] for n in names]), abs=1e-6)


def test_mlp_probe_beats_chance(probe_root, tmp_path):
    dm, _, metrics = fit_probe(probe_root, PooledPixels(), tmp_path / "cache", head="mlp", hidden_dim=64, depth=2)
    assert len(dm.attribute_names) == len(SAMPLE_ATTRIBUTES)
    for name in COLOUR_ATTRIBUTES:
        assert metrics[f"test/auroc/{name}"] > 0.9, name


def test_probe_on_constant_features_does_not_beat_chance(probe_root, tmp_path):
    dm, _, metrics = fit_probe(probe_root, ConstantFeatures(), tmp_path / "cache")
    names, test_labels = label_split(probe_root, 2)
    positive_rate = test_labels.mean(0)
    for j, name in enumerate(names):
        if 0 < test_labels[:, j].sum() < len(test_labels):  # AUROC is undefined when one class is absent
            assert metrics[f"test/auroc/{name}"] == pytest.approx(0.5, abs=1e-6)  # all scores tie
        # one answer for every image: the accuracy is the rate of that answer in the test labels
        acc = metrics[f"test/acc/{name}"]
        assert min(abs(acc - positive_rate[j]), abs(acc - (1 - positive_rate[j]))) < 1e-6


def test_pos_weight_is_negatives_over_positives_of_the_train_split(probe_root, tmp_path):
    _, model, _ = fit_probe(probe_root, PooledPixels(), tmp_path / "cache", epochs=1, pos_weight=True)
    _, train_labels = label_split(probe_root, 0)
    pos = train_labels.sum(0)
    expected = (len(train_labels) - pos) / pos
    np.testing.assert_allclose(model.pos_weight.numpy(), expected, rtol=1e-6)


def test_feature_cache_is_reused_and_never_stale(probe_root, tmp_path):
    root = tmp_path / "faces"
    shutil.copytree(probe_root, root)
    cache_dir = tmp_path / "cache"

    def setup(extractor):
        dm = ProbeFeatureDataModule(FaceImageDataModule(str(root), num_workers=0), extractor, str(cache_dir),
                                    extract_num_workers=0)
        dm.prepare_data()
        dm.setup("fit")
        return dm

    first = PooledPixels()
    dm1 = setup(first)
    assert first.calls > 0 and len(list(cache_dir.glob("*.safetensors"))) == 3  # train, val, test

    again = PooledPixels()
    dm2 = setup(again)
    assert again.calls == 0  # every split from the cache
    assert torch.equal(dm2.features["train"], dm1.features["train"])

    doubled = PooledPixels(scale=2.0)  # other weights: other fingerprint, never the cached features
    dm3 = setup(doubled)
    assert doubled.calls > 0
    torch.testing.assert_close(dm3.features["train"], 2 * dm1.features["train"])

    # A replaced image (new bytes, new mtime) invalidates the split that holds it, and only that one.
    test_image = dm1.images.splits["test"][0]
    shutil.copyfile(dm1.images.splits["train"][0], test_image)
    os.utime(test_image, ns=(1, 1))
    changed = PooledPixels()
    dm4 = setup(changed)
    assert changed.calls == 1  # 60 test images = one batch of 64; train and val came from the cache
    torch.testing.assert_close(dm4.features["test"][0], dm1.features["train"][0])

    # A corrupt cache file is recomputed, not trusted.
    key = FeatureCache(cache_dir).key(changed, dm4.images.splits["val"])
    FeatureCache(cache_dir).path(key).write_bytes(b"not a safetensors file")
    recovered = PooledPixels()
    dm5 = setup(recovered)
    assert recovered.calls == 1
    assert torch.equal(dm5.features["val"], dm1.features["val"])




def reference_pixels(files, size):
    """Images as PIL decodes them, float [0, 1], resized with torch's antialiased bilinear: not facefd's loaders."""
    from PIL import Image

    out = []
    for f in files:
        x = torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]
        if x.shape[-2:] != (size, size):
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x[0])
    return torch.stack(out)


def test_categorical_head_and_predictor_records(probe_root, tmp_path):
    groups = write_hair_groups(probe_root)
    dm, model, metrics = fit_probe(probe_root, PooledPixels(), tmp_path / "cache", images_kwargs=dict(
        attributes=["Male"], categories_file=str(groups), categories={"hair": "hair"}))
    assert dm.categories == {"hair": ["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"]}
    test_classes = dm.images.category_labels["test"][:, 0]
    majority = torch.bincount(test_classes).max().item() / len(test_classes)
    assert metrics["test/acc/hair"] > majority + 0.15

    path = model.export_heads(tmp_path / "heads.safetensors")
    predictor = AttributePredictor(PooledPixels(), path)
    files = dm.images.splits["test"][:5]
    records = predictor.predict_records(files)
    assert len(records) == 5 and set(records[0]) == {"Male", "hair"}
    # by hand: PIL pixels, 4 x 4 pooled (PooledPixels), standardised, the head; sigmoid for Male, softmax for hair
    heads = predictor.heads
    feats = torch.nn.functional.adaptive_avg_pool2d(reference_pixels(files, 32), 4).flatten(1)
    out = heads.net((feats - heads.feature_mean) / heads.feature_std)
    male, hair = out[:, 0].sigmoid(), out[:, 1:5].softmax(-1)
    for i, rec in enumerate(records):
        assert rec["Male"] == pytest.approx(float(male[i]), abs=1e-6)
        assert [rec["hair"][c] for c in dm.categories["hair"]] == pytest.approx(hair[i].tolist(), abs=1e-6)
    predicted = [max(r["hair"], key=r["hair"].get) for r in records]
    assert sum(p == dm.categories["hair"][int(c)] for p, c in zip(predicted, test_classes[:5])) >= 3




def test_train_py_probe_end_to_end_with_independent_test_set(probe_root, tmp_path):
    from facefd.train import run

    independent = independent_folder(tmp_path)
    cfg = compose_train(tmp_path, [
        "model=probe", "data=faces", f"data.root={probe_root}", "data.num_workers=0",
        "probe.extractor={_target_:helpers.PooledPixels}", f"probe.cache_dir={tmp_path / 'cache'}",
        "probe.attributes=[Blond_Hair,Male,Young]", "probe.batch_size=64", "trainer.max_epochs=40",
        "features.extract_num_workers=0", f"probe.extra_test_root={independent}",
        "callbacks.rich_progress_bar=null", "callbacks.model_summary=null",
    ], tiny_run=False)
    assert cfg.optimized_metric == "val/acc" and "knn_probe" not in cfg.callbacks
    best_val = run(cfg)
    # val/acc is the mean accuracy over the three attributes; answering each attribute's majority scores
    # (computed here from the attribute and partition files) well below what the heads reach

    table = read_attribute_table(probe_root / "list_attr_celeba.txt")
    part = read_partition_file(probe_root / "list_eval_partition.txt")
    val = np.array([table.values[table.lookup(k)] for k in table.keys if part[k] == 1], dtype=float)
    cols = [table.names.index(a) for a in ("Blond_Hair", "Male", "Young")]
    majority = float(np.mean([max(val[:, c].mean(), 1 - val[:, c].mean()) for c in cols]))
    assert majority + 0.05 < best_val <= 1.0

    heads_file = tmp_path / "probe" / "probe_heads.safetensors"
    predictor = AttributePredictor(PooledPixels(), heads_file)
    assert predictor.attribute_names == ["Blond_Hair", "Male", "Young"]

    # The predictor's probabilities are the heads applied to the extractor's features, by hand here.
    files = sorted((independent / "images").glob("*.png"))[:6]
    batch = reference_pixels(files, 32)
    heads = predictor.heads
    feats = torch.nn.functional.adaptive_avg_pool2d(batch, 4).flatten(1)
    logits = heads.net((feats - heads.feature_mean) / heads.feature_std)
    expected = logits.sigmoid()
    got = predictor.predict(files)
    for j, name in enumerate(predictor.attribute_names):
        torch.testing.assert_close(got[name], expected[:, j])
    assert predictor.predict(batch)["Male"].shape == (6,)

    # A checkpoint loads too, and heads trained on one extractor refuse another.
    ckpt = next((tmp_path / "checkpoints").glob("epoch_*.ckpt"))
    AttributePredictor(PooledPixels(), ckpt)
    with pytest.raises(HeadsFileError, match="another extractor"):
        AttributePredictor(PooledPixels(scale=3.0), heads_file)
    with pytest.raises(HeadsFileError, match="nothing.safetensors not found"):
        AttributePredictor(PooledPixels(), tmp_path / "nothing.safetensors")


def test_independent_test_set_reports_only_its_attributes(probe_root, tmp_path):
    independent = independent_folder(tmp_path)
    images = FaceImageDataModule(str(probe_root), num_workers=0, attributes=["Blond_Hair", "Male"])
    dm = ProbeFeatureDataModule(images, PooledPixels(), str(tmp_path / "cache"), extract_num_workers=0,
                                batch_size=64, extra_test_root=str(independent))
    model = ProbeModule()
    trainer = pl.Trainer(max_epochs=30, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, dm)
    trainer.test(model, dm, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert "test_independent/acc/Male" in metrics and "test_independent/acc/Blond_Hair" not in metrics
    extra = dm.datasets["extra_test"]
    with torch.no_grad():
        male = model.heads(extra.features)[:, 1].sigmoid()
    expected = ((male > 0.5).float() == extra.attributes[:, 1]).float().mean()
    assert metrics["test_independent/acc/Male"] == pytest.approx(float(expected), abs=1e-6)


def test_attributes_all_is_every_celeba_attribute(probe_root, tmp_path):
    root = tmp_path / "celeba_hq"
    shutil.copytree(probe_root / "images", root)
    rng = np.random.default_rng(0)
    files = sorted(p.name for p in root.glob("*.png"))
    rows = [f"{f} " + " ".join(str(v) for v in rng.choice([-1, 1], len(CELEBA_ATTRIBUTES))) for f in files]
    (root / "CelebAMask-HQ-attribute-anno.txt").write_text(
        "\n".join([str(len(files)), " ".join(CELEBA_ATTRIBUTES), *rows]) + "\n")
    dm = FaceImageDataModule(str(root), attributes="all", num_workers=0, check_images=False)
    dm.setup()
    assert dm.attribute_names == list(CELEBA_ATTRIBUTES) and len(dm.attribute_names) == 40
    cfg = compose_train(tmp_path, ["model=probe", "data=celeba_hq", f"data.root={root}", "probe.attributes=all"],
                        tiny_run=False)
    assert cfg.data.attributes == "all" and cfg.data.val_fraction == cfg.data.test_fraction == 0.1
    with pytest.raises(ValueError, match="list of names or 'all'"):
        FaceImageDataModule(str(root), attributes="some")


def test_heads_file_errors(tmp_path):
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(1)}, str(bare))
    with pytest.raises(HeadsFileError, match="no probe card"):
        AttributePredictor(PooledPixels(), bare)
    from facefd.models.probe import ProbeHeads

    heads = ProbeHeads(48, ["Male"])
    path = save_heads(heads, tmp_path / "h.safetensors", heads.card(extractor_fingerprint=""))
    assert AttributePredictor(PooledPixels(), path).attribute_names == ["Male"]  # no fingerprint: not checked


def test_fairface_category_file(tmp_path):
    from facefd.data.attributes import FAIRFACE_RACE7, read_category_table

    path = tmp_path / "fairface_label_train.csv"
    path.write_text("file,age,gender,race,service_test\ntrain/1.jpg,50-59,Male,East Asian,True\n"
                    "train/2.jpg,30-39,Female,Indian,False\ntrain/3.jpg,3-9,Female,Black,False\n")
    table = read_category_table(path, {"ethnicity": "race", "age": "age"})
    assert table.classes["ethnicity"] == list(FAIRFACE_RACE7)  # FairFace's order, not the file's
    assert table.classes["age"][:4] == ["0-2", "3-9", "10-19", "20-29"]
    row = table.lookup("2.jpg")
    assert table.classes["ethnicity"][table.values[row, 0]] == "Indian"
    assert table.classes["age"][table.values[row, 1]] == "30-39"
    with pytest.raises(ValueError, match="no column"):
        read_category_table(path, {"ethnicity": "ethnicity"})


def test_build_extractor_by_name(monkeypatch):
    from facefd.metrics.extractors import build_extractor
    from facefd.utils.errors import UserError

    monkeypatch.setenv("FACEFD_OFFLINE", "1")  # names that fetch from a hub must not reach the network here

    assert build_extractor("random:test_resnet").num_features == 96
    module = PooledPixels()
    assert build_extractor(module) is module
    assert isinstance(build_extractor({"_target_": "helpers.PooledPixels"}), PooledPixels)
    for name in ("fdd", "dino_imagenet"):  # inception and timm: without a file fetch the standard weights
        with pytest.raises(ValueError, match="needs a weights file"):
            build_extractor(name)
    with pytest.raises(FileNotFoundError, match="pt_inception"):
        build_extractor("inception", "/nonexistent/pt_inception-2015-12-05-6726825d.pth")
    with pytest.raises(ValueError, match="unknown extractor 'nonsense'"):
        build_extractor("nonsense")
    with pytest.raises(UserError, match="could not be loaded"):  # offline, not in the cache: one line
        build_extractor("clip")
