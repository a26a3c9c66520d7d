"""evaluate.py task=stats / task=fd, and the extractor builders' offline errors."""
import functools
import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from facefd import FrechetDistance, frechet_distance, load_extractor
from facefd.metrics.extractors import inception_extractor, timm_extractor
from facefd.metrics.stats import GaussianStats
from facefd.models.backbone import factory_spec
from facefd.models.extractor import save_extractor
from facefd.utils.errors import UserError
from runs import run_inprocess


@pytest.fixture()
def extractor_path(tmp_path):
    torch.manual_seed(0)
    factory = functools.partial(timm.create_model, model_name="test_resnet", pretrained=False, num_classes=0)
    return save_extractor(factory().eval(), factory_spec(factory), tmp_path / "ext", 96, 32,
                          (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _folder(path, n, seed, sizes=((32, 32),)):
    path.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path / f"{i}.png")
    return path


def test_stats_and_fd_tasks(tmp_path, extractor_path):
    a = _folder(tmp_path / "a", 30, 0, sizes=((32, 32), (48, 40)))  # mixed sizes are resized
    b = _folder(tmp_path / "b", 25, 1)
    common = [f"metric.feature_extractor.path={extractor_path}", "num_workers=0", "batch_size=8"]
    proc = run_inprocess(["evaluate.py", "task=stats", f"data.root={a}", f"out={tmp_path / 'a.npz'}", *common], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = GaussianStats.load(tmp_path / "a.npz")
    assert stats.count == 30 and stats.metadata["source"] == str(a)

    proc = run_inprocess(["evaluate.py", "task=fd", f"a={tmp_path / 'a.npz'}", f"b={b}", f"out={tmp_path / 'fd.json'}", *common],
                tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "fd.json").read_text())
    assert (result["n_a"], result["n_b"]) == (30, 25)

    # independent check: features of each image, one by one, through the extractor; numpy statistics
    ext = load_extractor(extractor_path)

    def feats(folder):  # PIL decoding and torch's resize, not facefd's loaders
        from references import pil_pixels

        return np.stack([ext(pil_pixels(f, 32)[None]).double().numpy()[0] for f in sorted(folder.glob("*.png"))])

    fa, fb = feats(a), feats(b)
    want = frechet_distance(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))
    assert result["fd"] == pytest.approx(want, rel=1e-5)

    proc = run_inprocess(["evaluate.py", "task=fd", f"a={a}", f"b={a}", *common], tmp_path)
    assert proc.returncode == 0 and "FD = 0 " in proc.stdout


def test_stats_file_from_another_extractor_is_refused(tmp_path, extractor_path):
    a = _folder(tmp_path / "a", 5, 0)
    proc = run_inprocess(["evaluate.py", "task=stats", f"data.root={a}", f"out={tmp_path / 'a.npz'}", "metric=timm",
                 "metric.feature_extractor.model_name=test_resnet", "metric.feature_extractor.random_init=true",
                 "metric.feature_extractor.input_size=32", "num_workers=0"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_inprocess(["evaluate.py", "task=fd", f"a={tmp_path / 'a.npz'}", f"b={a}",
                 f"metric.feature_extractor.path={extractor_path}", "num_workers=0"], tmp_path)
    assert proc.returncode != 0 and "another extractor" in proc.stderr


def test_offline_extractor_errors_name_the_missing_file(tmp_path, monkeypatch):
    from huggingface_hub import constants

    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
        inception_extractor(tmp_path / "nope.pth")
    monkeypatch.setenv("FACEFD_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(UserError, match=r"timm/resnet18.a1_in1k/model.safetensors\) is not in the Hugging Face cache"):
        timm_extractor("resnet18")  # no file: timm's hub copy, here offline and not cached
    with pytest.raises(FileNotFoundError, match="not found"):
        timm_extractor("resnet18", weights_path=tmp_path / "missing.safetensors")


def test_timm_extractor_loads_local_weights(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    src = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    ext = timm_extractor("test_resnet", weights_path=tmp_path / "w.safetensors", input_size=32)
    src.reset_classifier(0)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(ext(x), src.eval()(ext.preprocess(x)))
    m = FrechetDistance(ext, normalize=True)
    assert m.num_features == ext.num_features and m.fingerprint == ext.fingerprint


def test_fid_inception_loads_local_weights(tmp_path, monkeypatch):
    """The real FID network from torch-fidelity, with random weights saved by the test (no download)."""
    tfi = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    with monkeypatch.context() as patch:  # build the architecture once without its (downloaded) weights
        patch.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        torch.manual_seed(0)
        random_net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    weights = tmp_path / "random_inception.pth"  # the standard name would have to carry the standard hash
    torch.save(random_net.state_dict(), weights)

    ext = inception_extractor(weights)
    assert ext.num_features == 2048 and ext.card["input_size"] == 299
    images = torch.rand(2, 3, 64, 48)
    feats = ext(images)
    want = random_net((images * 255).round().to(torch.uint8))[0].reshape(2, -1)
    assert feats.shape == (2, 2048)
    torch.testing.assert_close(feats, want)
    m = FrechetDistance(ext, normalize=True)
    assert m.num_features == 2048 and m.fingerprint == ext.fingerprint


def test_fd_command_num_samples_seed_and_device(tmp_path, extractor_path, capsys):
    """facefd fd --num-samples 9 --seed 2 --device cpu: the distance of the seeded samples (numpy's
    default_rng(2) drawing 9 of each folder's sorted files), features by hand from PIL pixels, scipy statistics."""
    from facefd.cli import fd_main
    from references import pil_pixels

    a, b = _folder(tmp_path / "a", 20, 0), _folder(tmp_path / "b", 16, 1)
    value = fd_main([str(a), str(b), "--extractor", f"fdd@{extractor_path}", "--num-samples", "9", "--seed", "2",
                     "--device", "cpu", "--batch-size", "4"])
    ext = load_extractor(extractor_path)

    def feats(folder):
        files = sorted(folder.glob("*.png"), key=lambda p: p.name)
        keep = np.sort(np.random.default_rng(2).choice(len(files), size=9, replace=False))
        with torch.no_grad():
            return np.stack([ext(pil_pixels(files[i], 32)[None]).double().numpy()[0] for i in keep])

    fa, fb = feats(a), feats(b)
    want = frechet_distance(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))
    assert value == pytest.approx(want, rel=1e-5)
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"FD: {value}"
