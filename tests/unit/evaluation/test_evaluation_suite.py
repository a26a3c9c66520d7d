"""evaluate.py's benchmark suite: distances against scipy, perturbation ordering, correlation against
scipy.stats, neighbour search against brute force, subgroups, curves, and the PNGs they write."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from references import scipy_reference

from facefd.data.images import load_rgb
from facefd.data.sample_faces import generate_sample_faces
from facefd.data.tensors import pil_to_tensor
from facefd.evaluation.benchmark import build_sets, run_benchmark
from facefd.evaluation.correlate import correlate, read_ratings
from facefd.evaluation.image_sets import ImageSet
from facefd.evaluation.neighbors import grid_size, knn_search
from facefd.evaluation.perturbations import GaussianBlur, GaussianNoise
from runs import run_inprocess

POOLED = "{_target_:helpers.PooledPixels}"


def pooled(paths):
    x = torch.stack([pil_to_tensor(load_rgb(p), 32) for p in paths])
    return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1).double().numpy()


def gaussian(x):
    return x.mean(0), np.cov(x, rowvar=False)


def test_set_against_itself_is_zero_and_values_match_scipy(probe_root, tmp_path):
    paths = sorted((probe_root / "images").glob("*.png"))
    reference = ImageSet("reference", paths[:200], kind="reference")
    sets = [ImageSet("same", paths[:200]), ImageSet("other", paths[200:400])]
    rows = run_benchmark(reference, sets, [{"_target_": "helpers.PooledPixels"}], tmp_path / "cache",
                         extract_kwargs=dict(num_workers=0))
    by_set = {r.set: r for r in rows}
    assert abs(by_set["same"].fd) < 1e-9
    expected = scipy_reference(*gaussian(pooled(paths[:200])), *gaussian(pooled(paths[200:400])))
    assert by_set["other"].fd == pytest.approx(expected, rel=1e-5)
    assert (by_set["other"].n_reference, by_set["other"].n_set) == (200, 200)


def test_heavier_perturbations_move_further(probe_root, tmp_path):
    perturbations = {"blur1": GaussianBlur(0.5), "blur4": GaussianBlur(3.0), "noise_light": GaussianNoise(0.02),
                     "noise_heavy": GaussianNoise(0.2)}
    reference, sets = build_sets(probe_root, [], perturbations, num_samples=150, seed=0)
    assert len(reference.paths) == 150 and [s.name for s in sets] == ["held-out", *perturbations]
    assert not set(reference.paths) & set(sets[0].paths)  # held-out images are not reference images
    rows = run_benchmark(reference, sets, ["random:test_resnet"], tmp_path / "cache", extract_kwargs=dict(num_workers=0))
    fd = {r.set: r.fd for r in rows}
    assert fd["blur4"] > fd["blur1"] and fd["noise_heavy"] > fd["noise_light"]
    assert fd["blur4"] > fd["held-out"] and fd["noise_heavy"] > fd["held-out"]


def test_benchmark_cli_writes_tables_and_chart(probe_root, tmp_path):
    other = generate_sample_faces(tmp_path / "other", num_images=80, image_size=48, seed=3, progress=False)
    out = tmp_path / "bench"
    proc = run_inprocess(["evaluate.py", "task=benchmark", f"reference.root={probe_root}", f"sets=[drawn@{other}]",
                 f"metrics=[{POOLED},random:test_resnet]", "perturb=[hflip,blur,grayscale]", "num_samples=80",
                 "bootstrap=10", "rescale.set=blur", "num_workers=0", f"cache_dir={tmp_path / 'cache'}", f"out={out}"],
                tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "metrics= is deprecated; use extractors=" in proc.stderr + proc.stdout  # the old key still works, and says so
    records = json.loads((out / "benchmark.json").read_text())
    assert {r["set"] for r in records} == {"held-out", "hflip", "blur", "grayscale", "drawn"}
    assert {r["metric"] for r in records} == {"PooledPixels", "random:test_resnet"}
    for r in records:
        assert r["n_reference"] == 80 and r["n_set"] == 80
        width = r["ci_high"] - r["ci_low"]  # a real interval, around the estimate (10 resamples of 80 + 80)
        assert width > 1e-3 * r["fd"] and r["ci_low"] - width < r["fd"] < r["ci_high"] + width
        assert r["rescaled"] == pytest.approx(r["fd"] / next(b["fd"] for b in records
                                                           if b["set"] == "blur" and b["metric"] == r["metric"]))
    with open(out / "benchmark.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(records)
    png = Image.open(out / "benchmark.png")
    assert png.format == "PNG" and png.width > 400 and png.height > 200


def test_correlation_matches_scipy_and_writes_scatter(tmp_path):
    from scipy import stats

    from facefd.evaluation.correlate import run_correlate

    sets = ["a", "b", "c", "d", "e"]
    fdd = [1.0, 2.5, 2.0, 4.0, 7.0]
    fid = [10.0, 8.0, 30.0, 20.0, 25.0]
    scores = [4.5, 4.0, 3.9, 2.5, 1.0]
    bench = [{"set": s, "metric": "FDD", "fd": v} for s, v in zip(sets, fdd)]
    bench += [{"set": s, "metric": "FID", "fd": v} for s, v in zip(sets, fid)]
    bench.append({"set": "unrated", "metric": "FDD", "fd": 9.0})
    (tmp_path / "benchmark.json").write_text(json.dumps(bench))
    (tmp_path / "ratings.csv").write_text("set,mean,std\n" + "".join(f"{s},{m},0.3\n" for s, m in zip(sets, scores)))
    results = run_correlate(tmp_path / "ratings.csv", tmp_path / "benchmark.json", tmp_path / "out")
    for name, values in (("FDD", fdd), ("FID", fid)):
        assert results[name]["pearson_r"] == pytest.approx(stats.pearsonr(values, scores).statistic)
        assert results[name]["spearman_rho"] == pytest.approx(stats.spearmanr(values, scores).statistic)
        assert results[name]["n_sets"] == 5
    assert results["FDD"]["spearman_rho"] == pytest.approx(-0.9)  # hand-computed: d² = 0,1,1,0,0 -> 1 - 6*2/120
    assert Image.open(tmp_path / "out" / "correlation.png").format == "PNG"
    (tmp_path / "bad.csv").write_text("name_of_set,value\nx,1\n")
    with pytest.raises(ValueError, match="needs a set column"):
        read_ratings(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="at least 3"):
        correlate({"a": {"mean": 1.0}}, bench)


def test_faiss_backend_without_faiss_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"^neighbors\.backend=faiss needs faiss: pip install faiss-cpu \(or faiss-gpu\)$"):
        knn_search(torch.zeros(2, 3), torch.zeros(4, 3), k=1, backend="faiss")


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_knn_search_equals_brute_force(distance, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    q, g = 0.1 * rng.normal(size=(37, 12)), 0.1 * rng.normal(size=(530, 12)) + 0.03  # distances below 1 as well
    d, i = knn_search(torch.from_numpy(q), torch.from_numpy(g), k=6, distance=distance, query_chunk=10, gallery_chunk=64,
                      backend=backend)
    for row in range(len(q)):
        if distance == "cosine":
            dist = 1 - (g @ q[row]) / (np.linalg.norm(g, axis=1) * np.linalg.norm(q[row]))
        else:
            dist = np.sqrt(((g - q[row]) ** 2).sum(1))
        order = np.argsort(dist, kind="stable")[:6]
        assert i[row].tolist() == order.tolist()
        np.testing.assert_allclose(d[row].numpy(), dist[order], atol=1e-5)


def test_neighbors_cli_json_and_grid(probe_root, tmp_path):
    images = sorted((probe_root / "images").glob("*.png"))
    queries, gallery = tmp_path / "queries", tmp_path / "gallery"
    queries.mkdir()
    gallery.mkdir()
    for p in images[:4]:
        shutil.copy(p, queries)
    for p in images[100:250]:
        shutil.copy(p, gallery)
    out = tmp_path / "nn"
    proc = run_inprocess(["evaluate.py", "task=neighbors", f"queries={queries}", f"gallery={gallery}",
                 f"extractors=[{POOLED},random:test_resnet]", "k=3", "distance=l2", "thumb=32", "num_workers=0",
                 f"cache_dir={tmp_path / 'cache'}", f"out={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "neighbors.json").read_text())
    gal = sorted(gallery.glob("*.png"))
    fq, fg = pooled(sorted(queries.glob("*.png"))), pooled(gal)
    for entry, f in zip(result, fq):
        dist = np.sqrt(((fg - f) ** 2).sum(1))
        order = np.argsort(dist)[:3]
        got = entry["neighbors"]["PooledPixels"]
        assert [Path(n["path"]).name for n in got] == [gal[j].name for j in order]
        np.testing.assert_allclose([n["distance"] for n in got], dist[order], atol=1e-4)
        assert len(entry["neighbors"]["random:test_resnet"]) == 3
    png = Image.open(out / "neighbors.png")
    assert png.size == grid_size(num_rows=4, k=3, num_spaces=2, thumb=32)


def _relabel(root: Path, keep: list[str]) -> None:
    from facefd.data.attributes import read_attribute_table

    table = read_attribute_table(root / "list_attr_celeba.txt")
    cols = [table.names.index(n) for n in keep]
    lines = [str(len(table.keys)), " ".join(keep)]
    lines += [k + " " + " ".join("1" if v else "-1" for v in row[cols]) for k, row in zip(table.keys, table.values)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")


def test_subgroups_distances_and_shares(probe_root, tmp_path):
    from facefd.data.attributes import read_attribute_table
    from facefd.evaluation.subgroups import run_subgroups, write_subgroups

    generated = generate_sample_faces(tmp_path / "gen", num_images=200, image_size=32, seed=5, progress=False)
    rows = run_subgroups(probe_root, generated, ["Male", "Young"], [{"_target_": "helpers.PooledPixels"}],
                         tmp_path / "cache", num_samples=None, min_count=10, extract_kwargs=dict(num_workers=0))
    ref_paths = sorted((probe_root / "images").glob("*.png"))
    gen_paths = sorted((generated / "images").glob("*.png"))
    ref_table, gen_table = (read_attribute_table(r / "list_attr_celeba.txt") for r in (probe_root, generated))
    ref_male = np.array([ref_table.values[ref_table.lookup(p.name), ref_table.names.index("Male")] for p in ref_paths])
    gen_male = np.array([gen_table.values[gen_table.lookup(p.name), gen_table.names.index("Male")] for p in gen_paths])
    male = next(r for r in rows if r.attribute == "Male" and r.group == "Male")
    assert male.n_reference == int(ref_male.sum()) and male.n_generated == int(gen_male.sum())
    assert male.share_generated == pytest.approx(gen_male.mean())
    fr, fg = pooled(ref_paths), pooled(gen_paths)
    expected = scipy_reference(*gaussian(fr[ref_male == 1]), *gaussian(fg[gen_male == 1]))
    assert male.fd == pytest.approx(expected, rel=1e-5)
    shares = [r.share_reference for r in rows if r.attribute == "Young"]
    assert sum(shares) == pytest.approx(1.0)
    paths = write_subgroups(rows, tmp_path / "out")
    assert Image.open(paths["png"]).format == "PNG"


def test_subgroups_predicts_missing_labels(probe_root, tmp_path):
    from facefd.evaluation.subgroups import group_labels

    class Oracle:  # stands in for AttributePredictor: "Male" from the drawn labels of a copy
        categories: dict = {}

        def __init__(self, values):
            self.values = values

        def predict(self, paths):
            return {"Male": torch.tensor([self.values[Path(p).name] for p in paths], dtype=torch.float32)}

    root = tmp_path / "unlabelled"
    shutil.copytree(probe_root / "images", root)
    from facefd.data.attributes import read_attribute_table

    table = read_attribute_table(probe_root / "list_attr_celeba.txt")
    truth = {k: 0.9 if v else 0.2 for k, v in zip(table.keys, table.values[:, table.names.index("Male")])}
    paths = sorted(root.glob("*.png"))[:50]
    groups = group_labels(paths, root, ["Male"], predictor=lambda: Oracle(truth))
    assert groups["Male"] == ["Male" if truth[p.name] > 0.5 else "not Male" for p in paths]
    with pytest.raises(ValueError, match="no labels for"):
        group_labels(paths, root, ["Male"])


def test_curve_from_a_csv_log(tmp_path):
    log = tmp_path / "run" / "csv" / "version_0"
    log.mkdir(parents=True)
    (log / "metrics.csv").write_text("epoch,step,train/loss,val/fdd\n0,9,1.0,\n0,9,,12.5\n1,19,0.8,\n1,19,,7.25\n")
    proc = run_inprocess(["evaluate.py", "task=curve", f"run={tmp_path / 'run'}", f"out={tmp_path / 'out'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (tmp_path / "out" / "curve.csv").read_text().splitlines()
    assert lines == ["metric,step,value", "val/fdd,9,12.5", "val/fdd,19,7.25"]
    assert Image.open(tmp_path / "out" / "curve.png").format == "PNG"


def test_subgroups_from_a_category_file(probe_root):
    from facefd.data.attributes import read_attribute_table
    from facefd.evaluation.subgroups import group_labels
    from runs import write_hair_groups

    groups_csv = write_hair_groups(probe_root)
    paths = sorted((probe_root / "images").glob("*.png"))[:40]
    groups = group_labels(paths, probe_root, ["hair", "Male"], categories_file=str(groups_csv))
    table = read_attribute_table(probe_root / "list_attr_celeba.txt")
    colours = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"]
    expected = [next(c for c in colours if table.values[table.lookup(p.name), table.names.index(c)]) for p in paths]
    assert groups["hair"] == expected
    assert set(groups["Male"]) <= {"Male", "not Male"}  # the binary column still comes from the attribute file
