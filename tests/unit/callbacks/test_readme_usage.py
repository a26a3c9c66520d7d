"""The README's Python usage, as a user writes it: ``FDD(path)`` computing a value, ``FDDCallback(extractor_path=...,
sample_fn=...)`` in someone else's LightningModule, and ``trust_code=True`` for ``FDD`` and ``AttributePredictor``.
References: the saved network applied by hand to the same pixels, and scipy's Fréchet distance."""
from __future__ import annotations

import functools
import sys
import textwrap

import lightning.pytorch as pl
import numpy as np
import pytest
import timm
import torch

from facefd import FDD, FDDCallback
from facefd.models.backbone import factory_spec
from facefd.models.extractor import save_extractor
from facefd.utils.errors import UntrustedCodeError
from references import scipy_reference

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def by_hand(net, images):
    """The extractor's documented computation: ImageNet normalisation of [0, 1] pixels at its input size, the net."""
    x = (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return net(x).double().numpy()


def scipy_fd(a, b):
    return scipy_reference(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    factory = functools.partial(timm.create_model, model_name="test_resnet", pretrained=False, num_classes=0)
    net = factory().eval()
    path = save_extractor(net, factory_spec(factory), tmp_path_factory.mktemp("ext") / "extractor", 96, 32, MEAN, STD)
    return path, net


def images(n, seed, shift=0.0):
    return (torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 0.8 + shift).clamp(0, 1)


def test_fdd_from_a_path_computes_scipys_distance(saved):
    path, net = saved
    real, fake = images(130, 0), images(110, 1, 0.15)  # more samples than the 96 features
    fdd = FDD(path, normalize=True)
    for chunk in real.split(16):
        fdd.update(chunk, real=True)
    fdd.update(fake, real=False)
    assert float(fdd.compute()) == pytest.approx(scipy_fd(by_hand(net, real), by_hand(net, fake)), rel=1e-6)


class Generator(pl.LightningModule):
    """Someone else's model: no sample() method, so the callback needs sample_fn; it records what it drew."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.drawn = []

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_fdd_callback_with_an_extractor_path_and_sample_fn(saved, tmp_path):
    """FDDCallback(reference_images, num_samples, extractor_path=..., sample_fn=...): the logged val/fdd equals
    scipy's distance between the reference images' and the drawn samples' features, computed by hand."""
    path, net = saved
    reference = images(130, 2)
    counter = iter(range(100))

    def sample_fn(module, n):
        drawn = images(n, 10 + next(counter), 0.1)
        module.drawn.append(drawn)
        return drawn

    callback = FDDCallback(reference, num_samples=110, extractor_path=path, sample_fn=sample_fn, batch_size=48,
                           cache_dir=None)
    model = Generator()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)), batch_size=2)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, callbacks=[callback], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, data, data)
    drawn = torch.cat(model.drawn)
    assert len(drawn) == 110 and [len(d) for d in model.drawn] == [48, 48, 14]
    want = scipy_fd(by_hand(net, reference), by_hand(net, drawn))
    assert float(trainer.callback_metrics["val/fdd"]) == pytest.approx(want, rel=1e-5)


@pytest.fixture
def custom_extractor(tmp_path, monkeypatch):
    """An extractor whose card names a builder outside the allow-list (the user's own module)."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "my_face_backbones.py").write_text(textwrap.dedent("""
        from torch import nn
        def tiny(width=8):
            return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    """))
    monkeypatch.syspath_prepend(str(folder))
    import my_face_backbones

    torch.manual_seed(0)
    factory = functools.partial(my_face_backbones.tiny, width=8)
    net = factory().eval()
    yield save_extractor(net, factory_spec(factory), tmp_path / "custom", 8, 32, MEAN, STD), net
    sys.modules.pop("my_face_backbones", None)


def test_trust_code_opens_fdd_and_the_attribute_predictor(custom_extractor, tmp_path):
    from facefd import AttributePredictor
    from facefd.models.extractor import module_fingerprint
    from facefd.models.probe.heads import ProbeHeads
    from facefd.models.probe.predictor import save_heads

    path, net = custom_extractor
    with pytest.raises(UntrustedCodeError, match="my_face_backbones.tiny"):
        FDD(path)
    fdd = FDD(path, trust_code=True, normalize=True)
    real, fake = images(20, 3), images(20, 4, 0.2)
    fdd.update(real, real=True)
    fdd.update(fake, real=False)
    assert float(fdd.compute()) == pytest.approx(scipy_fd(by_hand(net, real), by_hand(net, fake)), rel=1e-5)

    torch.manual_seed(1)
    heads = ProbeHeads(8, ["Male"]).eval()
    heads_file = save_heads(heads, tmp_path / "heads.safetensors",
                            heads.card(extractor_fingerprint=module_fingerprint(fdd.extractor)))
    with pytest.raises(UntrustedCodeError):
        AttributePredictor(path, heads_file)
    predictor = AttributePredictor(path, heads_file, trust_code=True)
    feats = torch.from_numpy(by_hand(net, real)).float()
    with torch.no_grad():
        want = heads.net((feats - heads.feature_mean) / heads.feature_std)[:, 0].sigmoid()
    torch.testing.assert_close(predictor.predict(real)["Male"], want, rtol=1e-5, atol=1e-6)
