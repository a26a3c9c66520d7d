"""FDDCallback with the real images a Lightning project has: a DataLoader, a tensor or a folder, in a
project on ``lightning.pytorch`` and one on ``pytorch_lightning``; statistics cached for the next run.
Reference: scipy's Fréchet distance of the same images' features computed here in numpy."""
import importlib

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from facefd import FDDCallback, FrechetDistance
from lightning_fd import SAMPLERS, PooledColour, make_images, rank_samples
from references import scipy_reference


class CountingColour(PooledColour):
    """PooledColour that counts the images it sees."""

    def __init__(self):
        super().__init__()
        self.seen = 0

    def forward(self, images):
        self.seen += images.shape[0]
        return super().forward(images)


def _features(images) -> np.ndarray:
    return PooledColour()(images.float() / 255).double().numpy()


def _expected(real: torch.Tensor, epoch: int) -> float:
    drawn = torch.cat([rank_samples(epoch, 0, n, i) for i, n in enumerate((10, 10, 10, 10, 5))])
    a, b = _features(real), _features(drawn)
    return scipy_reference(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def _fit(flavour: str, callback, tmp_path) -> float:
    pl = importlib.import_module(flavour)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[callback], default_root_dir=tmp_path)
    trainer.fit(SAMPLERS[flavour]())
    return float(trainer.callback_metrics["val/fdd"])


def _folder(images: torch.Tensor, path) -> str:
    path.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(path / f"{i:03d}.png")
    return str(path)


@pytest.mark.parametrize("flavour", ["lightning.pytorch", "pytorch_lightning"])
@pytest.mark.parametrize("kind", ["dataloader", "tensor", "folder"])
def test_real_images_as_the_project_has_them(flavour, kind, tmp_path):
    real = make_images(96, 0, 0.0)
    reference = {"dataloader": lambda: DataLoader([(img, 1) for img in real], batch_size=20),
                 "tensor": lambda: real,
                 "folder": lambda: _folder(real, tmp_path / "real")}[kind]()
    callback = FDDCallback(reference, num_samples=45, batch_size=10, cache_dir=tmp_path / "cache",
                           metric=FrechetDistance(PooledColour()))
    assert _fit(flavour, callback, tmp_path) == pytest.approx(_expected(real, 0), rel=1e-6)  # logged as float32


def test_statistics_are_cached_for_the_next_run(tmp_path):
    real = make_images(96, 0, 0.0)
    runs = []
    for _ in range(2):
        extractor = CountingColour()
        callback = FDDCallback(DataLoader(real, batch_size=32), num_samples=45, batch_size=10,
                               cache_dir=tmp_path / "cache", metric=FrechetDistance(extractor))
        runs.append((_fit("lightning.pytorch", callback, tmp_path), extractor.seen))
    (first, seen_first), (second, seen_second) = runs
    assert seen_first == 96 + 45 and seen_second == 45  # the second run extracted only the samples
    assert second == first == pytest.approx(_expected(real, 0), rel=1e-6)
    assert len(list((tmp_path / "cache").glob("reference-*.npz"))) == 1
    other = FDDCallback(DataLoader(real[:50], batch_size=32), num_samples=45, batch_size=10,
                        cache_dir=tmp_path / "cache", metric=FrechetDistance(PooledColour()))
    _fit("lightning.pytorch", other, tmp_path)  # other images: another cache entry, not the first one's
    assert len(list((tmp_path / "cache").glob("reference-*.npz"))) == 2


def test_a_reference_it_cannot_use_is_one_error_before_training(tmp_path):
    with pytest.raises(TypeError, match="DataLoader"):
        FDDCallback([1, 2, 3], num_samples=4, metric=FrechetDistance(PooledColour()))
    with pytest.raises(FileNotFoundError, match="neither a statistics .npz nor a folder"):
        FDDCallback(tmp_path / "missing", num_samples=4, metric=FrechetDistance(PooledColour()))
    with pytest.raises(ValueError, match="N >= 2"):
        FDDCallback(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), num_samples=4, metric=FrechetDistance(PooledColour()))


def test_statistics_from_another_extractor_are_refused_whatever_their_road(tmp_path):
    """A cached (or any) statistics object is checked against the metric's extractor, as a file is."""
    from facefd.metrics.stats import GaussianStats, StatisticsFileError

    metric = FrechetDistance(PooledColour())
    foreign = GaussianStats(torch.zeros(12, dtype=torch.float64), torch.eye(12, dtype=torch.float64), 10, "other")
    with pytest.raises(StatisticsFileError, match="another extractor"):
        metric.use_reference(foreign, source="a cached entry")
    narrow = GaussianStats(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64), 10, metric.fingerprint)
    with pytest.raises(StatisticsFileError, match="3-d statistics"):
        metric.use_reference(narrow)
