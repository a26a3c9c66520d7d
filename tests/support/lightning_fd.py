"""A user's LightningModule that logs a facefd FrechetDistance, as in torchmetrics' FID docs (used by
the multi-process tests: spawned workers import it by name)."""
from __future__ import annotations

import atexit

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from facefd.metrics import CMMD, FrechetDistance
from facefd.utils.distributed import destroy_process_group_if_initialized


# Lightning destroys only NCCL groups at exit, and a gloo group left to the interpreter's teardown can abort a
# rank (facefd.utils.distributed). The plain metric registers no clean-up, so the user's script does: spawned
# and re-launched ranks both import this module.
atexit.register(destroy_process_group_if_initialized)


class PooledColour(nn.Module):
    """A deterministic 12-d extractor: 2x2 average-pooled RGB of [0, 1] images (declared, so uint8 images
    reach it as floats in [0, 1])."""

    num_features = 12
    input_dtype = torch.float32

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(images.float(), 2).flatten(1)


def make_images(n: int, seed: int, shift: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 8, 8, generator=g) * 0.8 + shift
    return (base.clamp(0, 1) * 255).round().to(torch.uint8)


class RealFakePairs(Dataset):
    """Item i: (real image i, fake image i)."""

    def __init__(self, n: int = 240) -> None:
        self.real, self.fake = make_images(n, 0, 0.0), make_images(n, 1, 0.15)

    def __len__(self) -> int:
        return len(self.real)

    def __getitem__(self, i: int):
        return self.real[i], self.fake[i]


class _FDSteps:
    """The user's code: update real and fake in validation_step, compute (or self.log) at epoch end."""

    def __init__(self, log_metric: bool = False, result_file: str = "") -> None:
        super().__init__()
        self.fd = FrechetDistance(PooledColour(), normalize=False)
        self.cmmd = CMMD(PooledColour())  # the same images' CMMD, gathered by torchmetrics' cat states
        self.layer = nn.Linear(1, 1)
        self.log_metric, self.result_file = log_metric, result_file

    def val_dataloader(self):
        return DataLoader(RealFakePairs(), batch_size=20)

    def validation_step(self, batch, batch_idx):
        real, fake = batch
        self.fd.update(real, real=True)
        self.fd.update(fake, real=False)
        self.cmmd.update(real, real=True)
        self.cmmd.update(fake, real=False)

    def on_validation_epoch_end(self) -> None:
        if self.log_metric:
            self.log("val/fd", self.fd)
            return
        value = float(self.fd.compute())
        cmmd = float(self.cmmd.compute())  # collective: every rank
        d = self.fd.num_features
        counts = (int(self.fd.real_moments[..., d, d].sum()), int(self.fd.fake_moments[..., d, d].sum()))
        if self.trainer.is_global_zero and self.result_file:
            with open(self.result_file, "a") as fh:
                fh.write(f"{value!r} {counts[0]} {counts[1]}\n")
            with open(self.result_file + ".cmmd", "a") as fh:
                fh.write(f"{cmmd!r}\n")
        self.fd.reset()


import lightning.pytorch as _L  # noqa: E402
import pytorch_lightning as _PL  # noqa: E402


class FDModuleLightning(_FDSteps, _L.LightningModule):
    pass


class FDModulePL(_FDSteps, _PL.LightningModule):
    pass


MODULES = {"lightning.pytorch": FDModuleLightning, "pytorch_lightning": FDModulePL}


# ----------------------------------------------------------------------------- FDDCallback under DDP
def rank_samples(epoch: int, rank: int, n: int, draw: int) -> torch.Tensor:
    """The images rank ``rank`` draws in its ``draw``-th call of epoch ``epoch`` (uint8, 8x8)."""
    return make_images(n, 10_000 * epoch + 100 * rank + draw, 0.1)


class _Sampler:
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.draws = 0

    def sample(self, n: int) -> torch.Tensor:
        images = rank_samples(self.current_epoch, self.global_rank, n, self.draws)
        self.draws += 1
        return images

    def on_validation_epoch_start(self) -> None:
        self.draws = 0

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0].float().mean(dim=(1, 2, 3))[:, None]).sum() * 0

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        return DataLoader(RealFakePairs(8), batch_size=4)

    def val_dataloader(self):
        return DataLoader(RealFakePairs(8), batch_size=4)


class SamplerLightning(_Sampler, _L.LightningModule):
    pass


class SamplerPL(_Sampler, _PL.LightningModule):
    pass


SAMPLERS = {"lightning.pytorch": SamplerLightning, "pytorch_lightning": SamplerPL}


class RecordFDD(_L.Callback):
    """Rank 0 appends each logged ``val/fdd`` to a file (spawned processes share no Python objects)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            with open(self.path, "a") as fh:
                fh.write(f"{float(trainer.callback_metrics['val/fdd'])!r}\n")


def main() -> None:
    """``python lightning_fd.py FLAVOUR STRATEGY DEVICES OUT [log|compute|callback REFERENCE]``: run the
    scenario and write rank 0's value(s) to OUT."""
    import importlib
    import sys

    flavour, strategy, devices, out, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    pl = importlib.import_module(flavour)
    kw = dict(strategy=strategy) if devices > 1 else {}
    common = dict(accelerator="cpu", devices=devices, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, **kw)
    if mode in ("callback", "callback-loader"):
        from facefd import FDDCallback

        # callback-loader: the real images as the project has them, a DataLoader of (image, label) batches
        reference = (DataLoader([(img, 0) for img in make_images(240, 0, 0.0)], batch_size=32)
                     if mode == "callback-loader" else sys.argv[6])
        fdd = FDDCallback(reference, num_samples=45, batch_size=10, cache_dir=None,
                          metric=FrechetDistance(PooledColour(), normalize=False))
        trainer = _L.Trainer(max_epochs=2, num_sanity_val_steps=0, callbacks=[fdd, RecordFDD(out)], **common)
        trainer.fit(SamplerLightning())
        return
    module = MODULES[flavour](mode == "log", out if mode == "compute" else "")
    trainer = pl.Trainer(**common)
    results = trainer.validate(module)
    if mode == "log" and trainer.is_global_zero:
        with open(out, "a") as fh:
            fh.write(f"{results[0]['val/fd']!r} 0 0\n")


if __name__ == "__main__":
    main()
