"""Feature extraction in 2 CPU processes (gloo) through Lightning's predict loop, and the one road from a folder
to features: ``num_samples`` is the same seeded sample in every task, and an option a task does not read is an
error. References: the single-process values of the same command, and features computed in the test from PIL
decoding and numpy (never facefd's loaders)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facefd.utils.errors import ConfigError

pytestmark = pytest.mark.slow


def noise_folder(path, n, seed, size=40):
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size + 8 * (i % 2), size), Image.BICUBIC).save(path / f"{i:02d}.png")
    return path


def pooled_numpy(files, size=32):
    """helpers.PooledPixels written in numpy on PIL's decoding: the image resized to 32 x 32 with antialiased
    bilinear (torch's F.interpolate, the resize every facefd extractor input gets), then 4 x 4 average pools."""
    import torch
    import torch.nn.functional as F

    out = []
    for f in files:
        x = torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].numpy()
        out.append(x.reshape(3, 4, size // 4, 4, size // 4).mean(axis=(2, 4)).reshape(-1))
    return np.stack(out).astype(np.float64)


def seeded(files, num, seed):
    """The documented meaning of num_samples: numpy's default_rng(seed) draws num indices without replacement."""
    keep = np.sort(np.random.default_rng(seed).choice(len(files), size=num, replace=False))
    return [files[i] for i in keep]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    return noise_folder(root / "real", 17, 0), noise_folder(root / "fake", 15, 1)


def test_score_with_two_processes_equals_one(folders, tmp_path):
    """One real launch of ``facefd score --devices 2 --device cpu``: the same JSON values as one process (timm's
    test network with seeded random weights, which every process rebuilds identically from the pickled module)."""
    from facefd.evaluation.score import score_folders

    real, fake = folders
    net = "random:test_resnet"
    metrics = f"fd/{net},kid/{net},prdc/{net}"
    one = score_folders(real, fake, metrics, cache_dir=tmp_path / "c1", batch_size=4, device="cpu",
                        echo=lambda line: None)
    out = tmp_path / "two.json"
    proc = subprocess.run([sys.executable, "-m", "facefd", "score", str(real), str(fake), "--metrics", metrics,
                           "--devices", "2", "--device", "cpu", "--batch-size", "4", "--cache-dir", str(tmp_path / "c2"),
                           "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 2 processes" in proc.stdout
    two = json.loads(out.read_text())
    assert two["devices"] == 2 and two["counts"] == one["counts"]
    key = lambda score: f"{score}/{net}"  # noqa: E731
    assert two["scores"][key("fd")]["value"] == pytest.approx(one["scores"][key("fd")]["value"], rel=1e-6)
    assert two["scores"][key("kid")]["value"] == pytest.approx(one["scores"][key("kid")]["value"], rel=1e-5, abs=1e-9)
    assert two["scores"][key("prdc")]["value"] == one["scores"][key("prdc")]["value"]


def _evaluate(overrides):
    from facefd.cli import main

    main(["evaluate", *overrides])


def test_evaluate_stats_in_two_processes_on_a_seeded_sample(folders, tmp_path):
    """``task=stats trainer=ddp_sim num_samples=9``: the statistics of exactly the seeded sample, equal to numpy on
    PIL-decoded pixels, from 2 processes; the file records the sample."""
    from facefd.metrics.stats import GaussianStats

    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from conftest import CONF
    from facefd.evaluation.tasks import task_module

    real, _ = folders
    out = tmp_path / "stats.npz"
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="evaluate", overrides=[
            "task=stats", f"data.root={real}", f"out={out}", "num_samples=9", "seed=3", "trainer=ddp_sim",
            "num_workers=0", "batch_size=2", f"cache_dir={tmp_path / 'cache'}"])
    with open_dict(cfg):
        cfg.metric.feature_extractor = {"_target_": "helpers.PooledPixels"}
    task_module("stats").run(cfg)
    stats = GaussianStats.load(out)
    files = seeded(sorted(real.glob("*.png")), 9, 3)
    want = pooled_numpy(files)
    np.testing.assert_allclose(stats.mean.numpy(), want.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats.cov.numpy(), np.cov(want, rowvar=False), atol=1e-6)
    assert stats.count == 9
    assert (stats.metadata["num_samples"], stats.metadata["seed"], stats.metadata["listed"]) == (9, 3, 17)


def test_neighbors_and_anonymization_read_the_same_sample(folders, tmp_path):
    """num_samples was ignored by neighbors and anonymization: now the queries are the seeded sample, recorded."""
    real, fake = folders
    out = tmp_path / "nn"
    _evaluate(["task=neighbors", f"queries={real}", f"gallery={fake}", "extractors=[{_target_: helpers.PooledPixels}]",
               "k=2", "num_samples=5", "seed=1", "num_workers=0", f"cache_dir={tmp_path / 'cache'}", f"out={out}",
               f"hydra.run.dir={tmp_path / 'run'}"])
    queries = [entry["query"] for entry in json.loads((out / "neighbors.json").read_text())]
    assert [q.split("/")[-1] for q in queries] == [p.name for p in seeded(sorted(real.glob("*.png")), 5, 1)]
    record = json.loads((out / "sample.json").read_text())
    assert (record["num_samples"], record["seed"], record["images"]) == (5, 1, {"queries": 5, "gallery": 5})

    from facefd.evaluation.anonymization import run_anonymization_eval

    anonymized = tmp_path / "anon"
    anonymized.mkdir()
    for p in sorted(real.glob("*.png")):
        Image.open(p).transpose(Image.FLIP_LEFT_RIGHT).save(anonymized / p.name)
    report = run_anonymization_eval(real, anonymized, tmp_path / "anon_out", embedders=[{"_target_": "helpers.PooledPixels"}],
                                    cache_dir=tmp_path / "cache", extract_kwargs=dict(num_workers=0), num_samples=6, seed=2)
    assert report["pairs"] == 6 and report["sample"] == {"num_samples": 6, "seed": 2, "pairs_listed": 17}


@pytest.mark.parametrize("task,override,named", [
    ("curve", "num_samples=5", "num_samples=5"),
    ("neighbors", "metric=fid", "metric=fid"),
    ("stats", "trainer.max_epochs=3", "trainer.max_epochs=3"),
    ("correlate", "trainer=ddp_sim", "trainer=ddp_sim"),
    ("export", "precision=bf16-mixed", "precision=bf16-mixed"),
])
def test_an_option_the_task_does_not_read_is_an_error(task, override, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _evaluate([f"task={task}", override])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: task={task} does not read {named}")


def test_options_a_task_reads_pass_the_check():
    from omegaconf import OmegaConf

    from facefd.evaluation.tasks import check_unread_options

    for task, overrides in {"benchmark": ["trainer=ddp_sim", "trainer.devices=2", "num_samples=10", "seed=2"],
                            "stats": ["metric=fid", "data.root=x", "cache_dir=c"],
                            "probe_table": ["data.attributes_file=a.txt", "num_samples=5"],
                            "curve": ["out=o", "run=r", "+columns=[fdd]"]}.items():
        check_unread_options(OmegaConf.create({"task": task}), overrides)
    with pytest.raises(ConfigError, match="reads trainer.accelerator, trainer.devices, trainer.strategy"):
        check_unread_options(OmegaConf.create({"task": "fd"}), ["trainer.max_steps=3"])
