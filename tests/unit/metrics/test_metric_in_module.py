"""The metric inside a user's LightningModule trained by Lightning's own loop: ``.train()`` (called by
Lightning every epoch) and ``.requires_grad_()`` on the parent must not reach the metric's network.
Reference: a fresh metric that never sat in a module, fed the same images, and the network's own
BatchNorm buffers before the run."""
import copy

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from facefd import FrechetDistance

tfi = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")


class PooledBN(nn.Module):
    """A user's extractor with BatchNorm (and a dropout) that torchmetrics code would pass as ``feature=``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        return self.drop(self.bn(self.conv(x)).relu().mean(dim=(2, 3)))


def _batches(n_batches: int, seed: int, size: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [((torch.rand(4, 3, size, size, generator=g) * 255).to(torch.uint8),
             (torch.rand(4, 3, size, size, generator=g) * 200).to(torch.uint8)) for _ in range(n_batches)]


class Generator(pl.LightningModule):
    """A GAN-style module that updates its FID in training_step (on the batch) and in validation."""

    def __init__(self, metric: FrechetDistance):
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.fid = metric

    def training_step(self, batch, batch_idx):
        real, fake = batch
        self.fid.update(real, real=True)
        self.fid.update(fake, real=False)
        return self.layer(real.float().mean(dim=(1, 2, 3))[:, None] / 255).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        real, fake = batch
        self.fid.update(real, real=True)
        self.fid.update(fake, real=False)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _unbatched(batches):
    return DataLoader(batches, batch_size=None)


@pytest.mark.parametrize("which", ["user_module", "fid_inception"])
def test_value_and_batchnorm_survive_lightnings_train_mode(which, fid_weights, tmp_path):
    def metric():
        if which == "user_module":
            return FrechetDistance(PooledBN())
        return FrechetDistance(64, feature_extractor_weights_path=fid_weights)

    train, val = _batches(3, seed=0), _batches(2, seed=1)
    module = Generator(metric())
    module.requires_grad_(True)  # a parent that unfreezes everything
    module.train()  # and, as any torch code may, puts every child in train mode
    buffers_before = copy.deepcopy({k: v for k, v in module.fid.extractor.state_dict().items()})
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=tmp_path)
    trainer.fit(module, _unbatched(train), _unbatched(val))
    assert module.training  # Lightning left the module in train mode ...
    assert not any(m.training for m in module.fid.extractor.modules())  # ... but not the metric's network
    assert not any(p.requires_grad for p in module.fid.extractor.parameters())
    after = module.fid.extractor.state_dict()
    assert set(after) == set(buffers_before)
    for name, value in buffers_before.items():  # running means, variances and batch counts untouched
        assert torch.equal(after[name], value), name

    fresh = metric()
    for real, fake in train + val:
        fresh.update(real, real=True)
        fresh.update(fake, real=False)
    assert float(module.fid.compute()) == pytest.approx(float(fresh.compute()), rel=1e-9, abs=1e-9)


def test_identical_sets_stay_at_zero_after_train():
    """The failure as a user meets it: identical sets, the parent put in train mode."""
    holder = nn.Module()
    holder.fid = FrechetDistance(PooledBN())
    holder.train()
    images = _batches(2, seed=3)
    for real, _ in images:
        holder.fid.update(real, real=True)
        holder.fid.update(real, real=False)
    assert float(holder.fid.compute()) == pytest.approx(0.0, abs=1e-9)
