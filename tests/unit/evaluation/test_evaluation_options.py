"""Options of the evaluation tasks that had no test: rescale.ratios, correlate_value=rescaled, the identities
CSV of the anonymization task, subgroup bootstrap intervals and min_count. References: hand-computed values,
scipy's correlations, and features written out here from PIL pixels."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from facefd.evaluation.benchmark import BenchmarkRow, rescale
from facefd.evaluation.correlate import run_correlate


def row(set_name, metric, fd, ci=None):
    r = BenchmarkRow(set_name, "folder", metric, fd, None, 100, 100)
    if ci:
        r.ci_low, r.ci_high = ci
    return r


def test_rescale_ratios_divide_each_metric_and_a_rescale_set_wins():
    rows = [row("blur", "FDD", 4.0, (3.0, 5.0)), row("noise", "FDD", 10.0), row("blur", "FID", 30.0)]
    rescale(rows, None, {"FDD": 2.0})  # rescale.ratios={FDD: 2.0}: FID has none and stays unscaled
    assert [r.rescaled for r in rows] == [2.0, 5.0, None]
    assert (rows[0].ci_low_rescaled, rows[0].ci_high_rescaled) == (1.5, 2.5)
    rows = [row("blur", "FDD", 4.0), row("noise", "FDD", 10.0), row("blur", "FID", 30.0), row("noise", "FID", 15.0)]
    rescale(rows, "blur", {"FDD": 2.0})  # the set's own values replace the ratios
    assert [r.rescaled for r in rows] == [1.0, 2.5, 1.0, 0.5]


def test_correlate_value_rescaled_reads_the_rescaled_column(tmp_path):
    from scipy import stats

    sets = ["a", "b", "c", "d", "e"]
    fd, rescaled, scores = [1.0, 2.0, 3.0, 4.0, 5.0], [0.5, 3.0, 0.2, 4.0, 9.0], [4.0, 3.5, 4.2, 2.0, 1.0]
    (tmp_path / "benchmark.json").write_text(json.dumps(
        [{"set": s, "metric": "FDD", "fd": f, "rescaled": r} for s, f, r in zip(sets, fd, rescaled)]))
    (tmp_path / "ratings.csv").write_text("set,mean,std\n" + "".join(f"{s},{m},0.2\n" for s, m in zip(sets, scores)))
    got = run_correlate(tmp_path / "ratings.csv", tmp_path / "benchmark.json", tmp_path / "out", value="rescaled")
    assert got["FDD"]["pearson_r"] == pytest.approx(stats.pearsonr(rescaled, scores).statistic, abs=1e-12)
    assert got["FDD"]["spearman_rho"] == pytest.approx(stats.spearmanr(rescaled, scores).statistic, abs=1e-12)
    plain = run_correlate(tmp_path / "ratings.csv", tmp_path / "benchmark.json", tmp_path / "out2")
    assert plain["FDD"]["pearson_r"] == pytest.approx(stats.pearsonr(fd, scores).statistic, abs=1e-12)


def test_identities_csv_counts_another_photo_of_the_same_person(tmp_path):
    """Four originals; the "anonymized" copy of a.png is b.png's picture, so its nearest original is b.png.
    Each original its own identity: Re-ID@1 = 3/4. With a CSV saying a and b are one person: 4/4."""
    from facefd.evaluation.anonymization import run_anonymization_eval

    rng = np.random.default_rng(0)
    originals, anonymized = tmp_path / "orig", tmp_path / "anon"
    originals.mkdir()
    anonymized.mkdir()
    pictures = {n: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for n in "abcd"}
    for name, picture in pictures.items():
        Image.fromarray(picture).save(originals / f"{name}.png")
        source = pictures["b"] if name == "a" else picture
        Image.fromarray(np.clip(source.astype(int) + 3, 0, 255).astype(np.uint8)).save(anonymized / f"{name}.png")
    kwargs = dict(embedders=[{"_target_": "helpers.PooledPixels"}], cache_dir=tmp_path / "cache", ks=[1],
                  extract_kwargs=dict(num_workers=0))
    alone = run_anonymization_eval(originals, anonymized, tmp_path / "out1", **kwargs)
    assert alone["reid"]["PooledPixels"]["reid@1"] == pytest.approx(0.75)
    csv = tmp_path / "identities.csv"
    csv.write_text("file,identity\na.png,p1\nb.png,p1\nc.png,p2\nd.png,p3\n")
    together = run_anonymization_eval(originals, anonymized, tmp_path / "out2", identities=str(csv), **kwargs)
    assert together["reid"]["PooledPixels"]["reid@1"] == pytest.approx(1.0)


def test_subgroups_min_count_and_bootstrap(probe_root, tmp_path):
    """min_count between the smallest and the next group size leaves exactly the small groups without a distance
    (counts from the attribute file, here); every other group gets a bootstrap interval of positive width
    around its distance."""
    from facefd.data.attributes import read_attribute_table
    from facefd.data.sample_faces import generate_sample_faces
    from facefd.evaluation.subgroups import run_subgroups

    generated = generate_sample_faces(tmp_path / "gen", num_images=200, image_size=32, seed=5, progress=False)
    counts = {}
    for root in (probe_root, generated):
        table = read_attribute_table(root / "list_attr_celeba.txt")
        for attr in ("Male", "Eyeglasses"):
            column = table.values[:, table.names.index(attr)].astype(bool)
            for group, n in ((attr, int(column.sum())), (f"not {attr}", int((~column).sum()))):
                counts[group] = min(counts.get(group, n), n)
    sizes = sorted(set(counts.values()))
    min_count = sizes[0] + 1
    rows = run_subgroups(probe_root, generated, ["Male", "Eyeglasses"], [{"_target_": "helpers.PooledPixels"}],
                         tmp_path / "cache", min_count=min_count, bootstrap=20, extract_kwargs=dict(num_workers=0))
    for r in rows:
        if counts[r.group] < min_count:
            assert r.fd is None and r.note == f"fewer than {min_count} images in a set"
        else:
            width = r.ci_high - r.ci_low
            assert r.fd is not None and width > 0 and r.ci_low - width < r.fd < r.ci_high + width
    assert any(r.fd is None for r in rows) and any(r.fd is not None for r in rows)


def test_anonymization_report_numbers_against_hand_computations(tmp_path):
    """Re-ID, attribute preservation and the Fréchet distance of an anonymized folder, each recomputed here:
    cosine ranking of pooled PIL pixels, a brightness head whose logit is set by hand (AUROC as the
    Mann-Whitney statistic), scipy's distance. The "anonymized" images are the originals brightened."""
    import torch

    from facefd.evaluation.anonymization import run_anonymization_eval
    from facefd.models.probe.heads import ProbeHeads
    from facefd.models.probe.predictor import AttributePredictor, save_heads
    from helpers import PooledPixels
    from references import pil_pixels, scipy_reference

    rng = np.random.default_rng(1)
    originals, anonymized = tmp_path / "orig", tmp_path / "anon"
    originals.mkdir()
    anonymized.mkdir()
    for i in range(12):
        picture = rng.integers(0, 200, (32, 32, 3)).astype(np.uint8) // (1 + i % 3)
        Image.fromarray(picture).save(originals / f"{i:02d}.png")
        Image.fromarray(np.clip(picture.astype(int) + 40, 0, 255).astype(np.uint8)).save(anonymized / f"{i:02d}.png")
    heads = ProbeHeads(48, ["Bright"], standardize=False)
    with torch.no_grad():  # logit = 20 * (mean pixel - 0.3)
        heads.net[0].weight.fill_(20.0 / 48)
        heads.net[0].bias.fill_(-20.0 * 0.3)
    heads_file = save_heads(heads, tmp_path / "heads.safetensors")
    report = run_anonymization_eval(
        originals, anonymized, tmp_path / "out", embedders=[{"_target_": "helpers.PooledPixels"}],
        metrics=[{"_target_": "helpers.PooledPixels"}], predictor=lambda: AttributePredictor(PooledPixels(), heads_file),
        cache_dir=tmp_path / "cache", ks=[1], extract_kwargs=dict(num_workers=0))

    def pooled(folder):
        files = sorted(folder.glob("*.png"))
        return np.stack([torch.nn.functional.adaptive_avg_pool2d(pil_pixels(f, 32)[None], 4).flatten().numpy()
                         for f in files]).astype(np.float64)

    g, q = pooled(originals), pooled(anonymized)
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    assert report["reid"]["PooledPixels"]["reid@1"] == pytest.approx(np.mean(cos.argmax(1) == np.arange(12)))
    want_fd = scipy_reference(g.mean(0), np.cov(g, rowvar=False), q.mean(0), np.cov(q, rowvar=False))
    assert report["distances"]["PooledPixels"] == pytest.approx(want_fd, rel=1e-6)
    p_orig = 1 / (1 + np.exp(-20 * (g.mean(1) - 0.3)))
    p_anon = 1 / (1 + np.exp(-20 * (q.mean(1) - 0.3)))
    labels = p_orig > 0.5
    assert 0 < labels.sum() < 12  # both classes among the originals
    pos, neg = p_anon[labels], p_anon[~labels]
    auc = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
    bright = report["attributes"]["Bright"]
    assert bright["accuracy"] == pytest.approx(np.mean((p_anon > 0.5) == labels))
    assert bright["auc"] == pytest.approx(auc, abs=1e-6) and bright["labels"] == "predicted on originals"
