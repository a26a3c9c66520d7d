"""FrechetDistance as a drop-in for torchmetrics' FrechetInceptionDistance, tested with torchmetrics'
own classes: the same constructor (feature=int with local weights, nn.Module without num_features,
torchmetrics' uint8 Inception), merge_state and plot."""
import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from facefd import FrechetDistance
from facefd.utils.weights import WeightsError
from references import scipy_reference

matplotlib.use("Agg")
tfi = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
tm_fid = pytest.importorskip("torchmetrics.image.fid")


def _images(n, seed, size=48):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)


def test_feature_int_equals_torchmetrics(fid_weights):
    # at 299 x 299 nothing is resized: torchmetrics resizes other sizes with torch's bilinear, facefd with
    # torch-fidelity's TF-compatible one (the reference FID's), so they agree only here
    real, fake = _images(80, 0, 299), (_images(80, 1, 299).float() * 0.7).to(torch.uint8)
    ours = FrechetDistance(64, feature_extractor_weights_path=fid_weights)  # positional, as torchmetrics
    theirs = tm_fid.FrechetInceptionDistance(feature=64, feature_extractor_weights_path=str(fid_weights))
    for m in (ours, theirs):
        m.update(real, real=True)
        m.update(fake, real=False)
    assert ours.num_features == 64
    assert float(ours.compute()) == pytest.approx(float(theirs.compute()), rel=1e-6)


def test_feature_int_without_weights_offline_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("FACEFD_OFFLINE", "1")
    with pytest.raises(WeightsError, match="weights-inception-2015-12-05-6726825d.pth"):
        FrechetDistance(feature=2048)
    with pytest.raises(ValueError, match="64, 192, 768, 2048"):
        FrechetDistance(feature=100, feature_extractor_weights_path="x.pth")


def test_torchmetrics_uint8_inception_module_as_feature(fid_weights):
    """torchmetrics' NoTrainInceptionV3 asserts uint8 input; float images with normalize=True work."""
    module = tm_fid.NoTrainInceptionV3("inception-v3-compat", ["64"], feature_extractor_weights_path=str(fid_weights))
    real, fake = _images(40, 2, 299), _images(40, 3, 299)
    ours = FrechetDistance(feature=module, normalize=True)
    ours.update(real.float() / 255, real=True)
    ours.update(fake.float() / 255, real=False)
    theirs = tm_fid.FrechetInceptionDistance(feature=64, feature_extractor_weights_path=str(fid_weights))
    theirs.update(real, real=True)
    theirs.update(fake, real=False)
    assert ours.num_features == 64
    assert float(ours.compute()) == pytest.approx(float(theirs.compute()), rel=1e-6)


class TinyNet(nn.Module):
    """Someone's own module: no num_features attribute."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 3)

    def forward(self, x):
        return self.conv(x.float()).mean(dim=(2, 3))


def test_plain_module_width_from_one_forward_and_value_against_scipy():
    real, fake = _images(30, 4, 16), _images(30, 5, 16)
    m = FrechetDistance(feature=TinyNet(), input_img_size=(3, 16, 16))
    assert m.num_features == 5
    m.update(real, real=True)
    m.update(fake, real=False)
    net = TinyNet()  # it declares no input dtype: it gets the uint8 images as given, as torchmetrics hands them over
    fr = net(real).double().detach().numpy()
    ff = net(fake).double().detach().numpy()
    want = scipy_reference(fr.mean(0), np.cov(fr, rowvar=False), ff.mean(0), np.cov(ff, rowvar=False))
    assert float(m.compute()) == pytest.approx(want, rel=1e-9)


def test_merge_state_then_update_keeps_working():
    chunks = [_images(20, 10 + i, 16) for i in range(6)]
    whole = FrechetDistance(feature=TinyNet(), input_img_size=(3, 16, 16))
    a = FrechetDistance(feature=TinyNet(), input_img_size=(3, 16, 16))
    b = FrechetDistance(feature=TinyNet(), input_img_size=(3, 16, 16))
    for i, x in enumerate(chunks[:4]):
        whole.update(x, real=i % 2 == 0)
        (a if i < 2 else b).update(x, real=i % 2 == 0)
    a.merge_state(b)
    assert float(a.compute()) == pytest.approx(float(whole.compute()), rel=1e-12)
    for i, x in enumerate(chunks[4:]):  # the next update used to crash on the stacked states
        whole.update(x, real=i % 2 == 0)
        a.update(x, real=i % 2 == 0)
    assert float(a.compute()) == pytest.approx(float(whole.compute()), rel=1e-12)
    assert a.counts == whole.counts == {"real": 60, "fake": 60}


def test_plot_through_torchmetrics_helpers():
    m = FrechetDistance(feature=TinyNet(), input_img_size=(3, 16, 16))
    m.update(_images(10, 20, 16), real=True)
    m.update(_images(10, 21, 16), real=False)
    fig, ax = m.plot()
    assert isinstance(fig, matplotlib.figure.Figure) and len(ax.lines) + len(ax.collections) > 0
    fig, ax = m.plot([m.compute(), m.compute() * 0.5])
    assert isinstance(fig, matplotlib.figure.Figure)


# ----------------------------------------------------------------------------- mixed image sizes
def _mixed_folder(path, n=6):
    from PIL import Image

    path.mkdir()
    rng = np.random.default_rng(0)
    sizes = ((40, 40), (56, 48), (64, 64))
    for i in range(n):
        h, w = sizes[i % 3]
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path / f"{i}.png")
    return path


def test_every_extractor_takes_a_folder_of_mixed_sizes(tmp_path, fid_weights):
    """FID (resizes itself: each image at its own size), timm, random, FDD and a custom module, through
    the folder API behind task=fd and the feature extractor behind task=benchmark / task=probe_table."""
    import functools

    import timm

    from facefd.data import list_images
    from facefd.evaluation.folder_stats import folder_statistics
    from facefd.metrics.extractors import inception_extractor, timm_extractor
    from facefd.models.backbone import factory_spec
    from facefd.models.extractor import load_extractor, save_extractor
    from facefd.models.probe.features import extract_features

    folder = _mixed_folder(tmp_path / "mixed")
    factory = functools.partial(timm.create_model, model_name="test_resnet", pretrained=False, num_classes=0)
    fdd = load_extractor(save_extractor(factory().eval(), factory_spec(factory), tmp_path / "ext", 96, 32,
                                        (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
    fid = inception_extractor(fid_weights)
    extractors = {"fid": fid, "fdd": fdd, "random": timm_extractor("test_resnet", random_init=True, input_size=32),
                  "custom": TinyNet()}
    paths = list_images(folder)
    from references import pil_pixels  # PIL decoding and torch's resize: not facefd's ImageTensors

    for name, ext in extractors.items():
        feats = extract_features(ext, paths, batch_size=4, num_workers=0, device="cpu",
                                 image_size=24 if name == "custom" else None)
        # one image at a time (no batching, so no stacking) is the reference
        size = getattr(ext, "input_size", None) if name != "fid" else None
        one_by_one = torch.cat([ext(pil_pixels(p, size if name != "custom" else 24)[None]).float() for p in paths])
        torch.testing.assert_close(feats, one_by_one.reshape(len(paths), -1), rtol=1e-4, atol=1e-5, msg=name)
        metric = FrechetDistance(ext, normalize=True, num_features=feats.shape[1], input_img_size=(3, 24, 24))
        stats = folder_statistics(metric, folder, batch_size=4, num_workers=0)
        want = torch.cat([ext(pil_pixels(p, getattr(ext, "input_size", None))[None]).float() for p in paths]).double()
        assert stats.count == len(paths)
        torch.testing.assert_close(stats.mean, want.mean(0), rtol=1e-4, atol=1e-5, msg=name)
        torch.testing.assert_close(stats.cov, torch.cov(want.T), rtol=1e-3, atol=1e-6, msg=name)


@pytest.mark.parametrize("model_name,size", [("resnet18", 32), ("convnext_atto", 32), ("efficientnet_b0", 32),
                                             ("mobilenetv3_small_100", 32), ("vit_tiny_patch16_224", 224)])
def test_any_timm_family_reports_the_width_it_returns(model_name, size):
    """MobileNetV3's pooled output is 1024-d (conv head) while timm's num_features says 576."""
    from facefd.metrics.extractors import timm_extractor

    ext = timm_extractor(model_name, random_init=True, input_size=size)
    feats = ext(torch.rand(2, 3, 40, 36))
    assert feats.shape == (2, ext.num_features)
    m = FrechetDistance(ext, normalize=True)
    m.update(torch.rand(3, 3, 40, 36), real=True)  # no width mismatch through the metric either
    if model_name.startswith("mobilenetv3"):
        assert ext.num_features == 1024 != ext.backbone.num_features


def test_clean_fid_resize_option_is_pil_bicubic_per_channel(fid_weights):
    from PIL import Image

    from facefd.metrics.extractors import InceptionFID

    images = _images(2, 30, 40)
    ext = InceptionFID(fid_weights, layer=64, resize="pil_bicubic")
    default = InceptionFID(fid_weights, layer=64)
    assert ext.fingerprint != default.fingerprint  # statistics of the two conventions never mix
    want = torch.empty(2, 3, 299, 299, dtype=torch.uint8)
    for i in range(2):
        for c in range(3):
            ch = Image.fromarray(images[i, c].numpy().astype(np.float32), mode="F").resize((299, 299), Image.BICUBIC)
            want[i, c] = torch.from_numpy(np.clip(np.asarray(ch), 0, 255).round().astype(np.uint8))
    torch.testing.assert_close(ext(images), default(want))  # at 299 the network resizes nothing
    assert not torch.allclose(ext(images), default(images))


@pytest.mark.slow
def test_fid_on_a_mixed_size_folder_through_the_task_commands(tmp_path, fid_weights):
    """The reported crash: `evaluate.py task=fd metric=fid` on mixed sizes ("stack expects each tensor to be
    equal size"). task=benchmark and task=probe_table extract through `extract_features`, tested above."""
    import json

    from runs import run_inprocess

    a, b = _mixed_folder(tmp_path / "a"), _mixed_folder(tmp_path / "b", n=9)
    proc = run_inprocess(["evaluate.py", "task=fd", f"a={a}", f"b={b}", "metric=fid",
                 f"metric.feature_extractor.weights_path={fid_weights}", "num_workers=0", "batch_size=4",
                 f"out={tmp_path / 'fd.json'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "fd.json").read_text())["n_b"] == 9
