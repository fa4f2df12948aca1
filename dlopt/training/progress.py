"""The progress bar: Lightning's TQDM bar with epochs numbered from 1 of max_epochs ("Epoch 3/30"), as dlopt's log
lines, metrics.json and curves.png number them, and without the logger's version number among its metrics."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf


class ProgressBar(TQDMProgressBar):
    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        # TQDMProgressBar.on_train_epoch_start with the epoch from 1 (calling it would show its own first)
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        bar, epochs = self.train_progress_bar, trainer.max_epochs
        bar.reset()
        bar.total, bar.initial = convert_inf(self.total_train_batches), 0
        bar.set_description(f"Epoch {trainer.current_epoch + 1}" + (f"/{epochs}" if epochs and epochs > 0 else ""))

    def get_metrics(self, trainer: L.Trainer, module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, module)
        metrics.pop("v_num", None)
        return metrics
