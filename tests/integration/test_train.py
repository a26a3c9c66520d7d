"""train.py end to end through Hydra: fast_dev_run, a short real run, resume, sweeps, bad data."""
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import TINY_TRAIN, compose_train
from facefd import load_extractor
from facefd.data import BadImagesError, ImageFolderError
from facefd.train import run
from runs import run_inprocess, run_script

pytestmark = pytest.mark.slow


def test_fast_dev_run_writes_nothing(tmp_path, sample_root, caplog):
    out = tmp_path / "out"
    cfg = compose_train(out, ["debug=fast"], sample_root)
    run(cfg)
    assert [p for p in out.rglob("*") if p.is_file()] == []  # no checkpoint, extractor, logs or curve
    assert "KNNProbe" not in caplog.text and "initial network" not in caplog.text


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, sample_root) -> tuple[Path, float]:
    """The tiny default run (2 epochs, no loader workers), shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("short_run")
    return out, run(compose_train(out, [], sample_root))


def test_short_run_exports_a_working_extractor(short_run):
    out, value = short_run
    assert value is not None and 0 < value < 10
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts
    metrics = (out / "csv" / "version_0" / "metrics.csv").read_text()
    assert "train/loss_epoch" in metrics and "train/lr" in metrics
    ext = load_extractor(out / "extractor" / "extractor.safetensors")
    assert ext.card["source"]["global_step"] == 6
    feats = ext(torch.rand(5, 3, 32, 32))
    assert feats.shape == (5, 96) and torch.isfinite(feats).all()
    assert feats.std(0).mean() > 0  # not a constant map


def _state(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_equals_uninterrupted_run(tmp_path, sample_root, short_run, workers):
    # With workers the loader prefetches its first indices when its iterator is made, before Lightning's
    # set_epoch on a resumed run: this once replayed epoch 0's crops (0.63 max weight difference).
    w = [f"data.num_workers={workers}"]
    if workers == 0:
        straight = short_run[0]  # the same run, already made
    else:
        straight = tmp_path / "straight"
        run(compose_train(straight, w, sample_root))

    interrupted = tmp_path / "interrupted"
    cfg = compose_train(interrupted, w + ["+callbacks.stop._target_=helpers.StopAfterEpoch",
                                          "+callbacks.stop.epoch=0"], sample_root)
    run(cfg)
    first_half = _state(interrupted / "checkpoints" / "last.ckpt")
    assert not torch.equal(first_half["teacher.backbone.conv1.0.weight"],
                           _state(straight / "checkpoints" / "last.ckpt")["teacher.backbone.conv1.0.weight"])

    resumed = tmp_path / "resumed"
    run(compose_train(resumed, w + [f"ckpt_path={interrupted / 'checkpoints' / 'last.ckpt'}"], sample_root))
    a, b = _state(straight / "checkpoints" / "last.ckpt"), _state(resumed / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    assert torch.count_nonzero(b["criterion.center"]) > 0


def test_bad_images_stop_the_run_and_skip_works(tmp_path, caplog):
    data = tmp_path / "faces"
    (data / "nested").mkdir(parents=True)
    for i in range(40):
        Image.new("RGB", (40, 36), (i * 5, 100, 200 - i * 4)).save(data / "nested" / f"{i}.jpg")
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    base = ["data=faces", f"data.root={data}", "data.num_workers=0", "data.train_transform.global_crop_size=32", "data.train_transform.local_crop_size=16",
            "data.train_transform.local_crops_number=2", "trainer.max_epochs=1"]
    with pytest.raises(BadImagesError, match="broken.png"):
        run(compose_train(tmp_path / "a", base))
    assert "1 unreadable images stopped the run" in caplog.text and "were skipped" not in caplog.text
    caplog.clear()
    run(compose_train(tmp_path / "b", base + ["data.skip_bad_images=true"]))
    assert "broken.png" in (tmp_path / "b" / "bad_images.txt").read_text()
    assert "1 unreadable images were skipped" in caplog.text
    assert (data / "broken.png").exists()  # inputs are never touched


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = compose_train(tmp_path / "out", ["data=faces", f"data.root={tmp_path / 'empty'}"])
    with pytest.raises(ImageFolderError, match="no images"):
        run(cfg)




def test_multirun_sweep_runs_two_jobs(tmp_path, sample_root):
    overrides = [o for o in TINY_TRAIN if not o.startswith("trainer.max_epochs")]
    proc = run_inprocess(["train.py", "-m", "model.optimizer.lr=1e-4,5e-4", "trainer.max_epochs=1", f"data.root={sample_root}",
                 f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted((tmp_path / "sweep").glob("[0-9]*"))
    assert [j.name for j in jobs] == ["0", "1"]
    for job in jobs:
        assert (job / "extractor" / "extractor.json").exists()
    lrs = [(job / ".hydra" / "overrides.yaml").read_text() for job in jobs]
    assert "model.optimizer.lr=0.0001" in lrs[0] and "model.optimizer.lr=0.0005" in lrs[1]


def test_optuna_sweep(tmp_path, sample_root):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    overrides = [o for o in TINY_TRAIN if not o.startswith("trainer.max_epochs")]
    proc = run_inprocess(["train.py", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
                 "trainer.max_epochs=1", f"data.root={sample_root}", f"hydra.sweep.dir={tmp_path / 'optuna'}",
                 *overrides], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = (tmp_path / "optuna" / "optimization_results.yaml").read_text()
    assert "best_value" in results and "model.optimizer.lr" in results


def test_export_task_from_checkpoint(tmp_path, short_run):
    ckpt = short_run[0] / "checkpoints" / "last.ckpt"
    proc = run_inprocess(["evaluate.py", "task=export", f"ckpt_path={ckpt}", f"out={tmp_path / 'exported'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = load_extractor(tmp_path / "exported")
    b = load_extractor(short_run[0] / "extractor")
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(a(x), b(x))


def test_ddp_two_processes_equal_one_process_with_the_full_batch(tmp_path, sample_root):
    """2 CPU processes (gloo) x batch 4 must train exactly like 1 process x batch 8: same images and
    crops (the sampler shards one seeded permutation), gradients averaged by DDP, the teacher center
    all-reduced (or, with Sinkhorn-Knopp targets, the prototype shares taken over the global batch), the LR
    scaled by the total batch. LayerNorm ViT and SGD keep round-off from being
    amplified (SyncBatchNorm is GPU-only, so the sample preset's BN head is switched off here; Adam's
    normalisation magnifies 1e-9 differences). Both centerings run in one real launch (a Hydra multirun of
    two DDP jobs); the one-process references run in-process."""
    common = [*[o for o in TINY_TRAIN if not o.startswith("data.batch_size")], "backbone=vit_tiny",
              "backbone.model_name=test_vit", "model.optimizer._target_=torch.optim.SGD", "model.optimizer.lr=0.5",
              "model.freeze_last_layer=0", "model.head.use_bn=false", f"data.root={sample_root}"]
    ddp = run_script(["train.py", "-m", "trainer=ddp_sim", "data.batch_size=4", "model.centering=ema,sinkhorn",
                      f"hydra.sweep.dir={tmp_path / 'ddp'}", "hydra.sweep.subdir=${model.centering}", *common], tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    for centering in ("ema", "sinkhorn"):
        single = run_inprocess(["train.py", "data.batch_size=8", f"model.centering={centering}",
                                f"hydra.run.dir={tmp_path / 'single' / centering}", *common], tmp_path)
        assert single.returncode == 0, single.stderr[-3000:]
        a = _state(tmp_path / "ddp" / centering / "checkpoints" / "last.ckpt")
        b = _state(tmp_path / "single" / centering / "checkpoints" / "last.ckpt")
        if centering == "ema":
            assert torch.count_nonzero(b["criterion.center"]) > 0  # the center moved, so comparing it means something
        else:  # Sinkhorn-Knopp targets keep no center: the weights below carry the global-batch shares
            assert torch.count_nonzero(b["criterion.center"]) == 0
        for key in b:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=f"{centering}: {key}")