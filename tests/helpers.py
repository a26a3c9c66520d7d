"""Test-only Lightning callbacks (referenced from configs by ``_target_``)."""
import lightning.pytorch as pl


class StopAfterEpoch(pl.Callback):
    """Simulates an interrupted run: stop cleanly after ``epoch`` (checkpoints are written first)."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch >= self.epoch:
            trainer.should_stop = True
