"""FDDCallback inside a small generator LightningModule written here."""
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from facefd import FDDCallback, FrechetDistance
from references import scipy_reference
from references import LinearFeatures, numpy_features


class ToyGenerator(pl.LightningModule):
    """Images = sigmoid(bias + noise); training pulls ``bias`` towards the real images' mean."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.full((3, 4, 4), -2.0))
        self.drawn: list[torch.Tensor] = []

    def sample(self, n):
        g = torch.Generator().manual_seed(1000 * self.current_epoch + len(self.drawn))
        imgs = torch.sigmoid(self.bias.detach() + 0.3 * torch.randn(n, 3, 4, 4, generator=g))
        self.drawn.append(imgs)
        return imgs

    def training_step(self, batch, batch_idx):
        (target,) = batch
        return ((torch.sigmoid(self.bias) - target.mean(0)) ** 2).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=3.0)


def test_callback_logs_the_distance_of_the_samples(tmp_path):
    ext = LinearFeatures()
    real = (torch.rand(200, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.4 + 0.4)
    ref_metric = FrechetDistance(ext, normalize=True)
    ref_metric.update(real, real=True)
    ref = ref_metric.save_reference(tmp_path / "ref.npz")

    model = ToyGenerator()
    logged = []

    class Spy(pl.Callback):
        def on_validation_end(self, trainer, pl_module):
            logged.append(float(trainer.callback_metrics["val/fdd"]))

    ckpt = ModelCheckpoint(dirpath=tmp_path, monitor="val/fdd", mode="min", save_top_k=1)
    fdd = FDDCallback(ref, num_samples=50, metric=FrechetDistance(LinearFeatures(), normalize=True), batch_size=16)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[fdd, Spy(), ckpt], num_sanity_val_steps=0)
    loader = DataLoader(TensorDataset(real), batch_size=50)
    trainer.fit(model, loader, loader)

    assert len(logged) == 3 and len(model.drawn) == 3 * 4  # 50 samples in batches of 16,16,16,2 per epoch
    fr = numpy_features(ext, real)
    for epoch in range(3):
        samples = torch.cat(model.drawn[4 * epoch: 4 * epoch + 4])
        assert samples.shape[0] == 50
        ff = numpy_features(ext, samples)
        want = scipy_reference(fr.mean(0), np.cov(fr, rowvar=False), ff.mean(0), np.cov(ff, rowvar=False))
        assert logged[epoch] == pytest.approx(want, rel=1e-4)
    assert logged[-1] < logged[0]  # the generator moved towards the real images
    assert float(ckpt.best_model_score) == pytest.approx(min(logged), rel=1e-6)


def test_every_n_epochs_and_missing_sample_method(tmp_path):
    ext = LinearFeatures()
    m = FrechetDistance(ext, normalize=True)
    m.update(torch.rand(20, 3, 4, 4), real=True)
    ref = m.save_reference(tmp_path / "ref.npz")
    cb = FDDCallback(ref, num_samples=10, every_n_epochs=2, metric=FrechetDistance(ext, normalize=True))
    model = ToyGenerator()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, callbacks=[cb], num_sanity_val_steps=0)
    loader = DataLoader(TensorDataset(torch.rand(10, 3, 4, 4)), batch_size=10)
    trainer.fit(model, loader, loader)
    assert len(model.drawn) == 1  # only after epoch index 1 (the 2nd epoch)

    with pytest.raises(ValueError, match="extractor_path"):
        FDDCallback(ref, num_samples=10)


class FDInsideModule(pl.LightningModule):
    """A module that owns the metric and logs it with self.log, as torchmetrics users do."""

    def __init__(self, ext):
        super().__init__()
        self.fd = FrechetDistance(ext, normalize=True)
        self.layer = nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(torch.ones(1, 1)).sum()

    def validation_step(self, batch, batch_idx):
        real, fake = batch
        self.fd.update(real, real=True)
        self.fd.update(fake, real=False)
        self.log("val/fd", self.fd, on_step=False, on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_metric_logged_with_self_log_equals_the_formula():
    ext = LinearFeatures()
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(64, 3, 4, 4, generator=g), torch.rand(64, 3, 4, 4, generator=g) * 0.8
    model = FDInsideModule(ext)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0)
    loader = DataLoader(TensorDataset(real, fake), batch_size=16)
    trainer.fit(model, DataLoader(TensorDataset(real), batch_size=64), loader)
    fr, ff = numpy_features(ext, real), numpy_features(ext, fake)
    want = scipy_reference(fr.mean(0), np.cov(fr, rowvar=False), ff.mean(0), np.cov(ff, rowvar=False))
    assert float(trainer.callback_metrics["val/fd"]) == pytest.approx(want, rel=1e-4)
