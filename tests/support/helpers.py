"""Test-only Lightning callbacks (referenced from configs by ``_target_``)."""
import lightning.pytorch as pl


class StopAfterEpoch(pl.Callback):
    """Simulates an interrupted run: stop cleanly after ``epoch`` (checkpoints are written first)."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch >= self.epoch:
            trainer.should_stop = True


import torch  # noqa: E402
from torch import nn  # noqa: E402


class PooledPixels(nn.Module):
    """A plain ``nn.Module`` extractor whose features carry colour attributes: 4x4 average-pooled RGB
    (48-d). Hair colour, pale skin and hats are linearly readable from it; ``calls`` counts forwards."""

    input_size = 32

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return nn.functional.adaptive_avg_pool2d(images.float(), 4).flatten(1) * self.scale


class ConstantFeatures(PooledPixels):
    """Features that carry nothing: every image maps to the same vector."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.ones(images.shape[0], 48)
