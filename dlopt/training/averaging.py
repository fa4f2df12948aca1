"""Stochastic weight averaging (Izmailov et al. 2018) on Lightning's WeightAveraging.

Lightning's EMAWeightAveraging serves `callbacks=[default,ema]` as it is. Its classic
StochasticWeightAveraging callback validates and checkpoints the raw weights, so the best
checkpoint a run tests would not be the averaged one; this subclass of WeightAveraging averages
the weights at the end of every epoch from `start_epoch` on, and validation, checkpoints and the
final weights use the average once there is one (before that, the raw weights).
"""

from __future__ import annotations

from typing import Optional

import lightning.pytorch as L
from lightning.pytorch.callbacks import WeightAveraging


class SWA(WeightAveraging):
    """`start_epoch`: an epoch index, or a fraction (< 1) of trainer.max_epochs."""

    def __init__(self, start_epoch: float = 0.75, **kwargs):
        super().__init__(**kwargs)
        self.start_epoch, self._start = start_epoch, 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._start = int(self.start_epoch * trainer.max_epochs) if self.start_epoch < 1 else int(self.start_epoch)

    def should_update(self, step_idx: Optional[int] = None, epoch_idx: Optional[int] = None) -> bool:
        return epoch_idx is not None and epoch_idx >= self._start

    def _averaging(self) -> bool:
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._swapped = self._averaging()
        if self._swapped:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._swapped:
            super().on_validation_epoch_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if self._averaging():
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._averaging():
            super().on_train_end(trainer, pl_module)
