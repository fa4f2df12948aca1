"""The trial's side of pruning: a Lightning callback that reports the monitored validation metric of
each epoch to the study and stops training when the study's pruner says so.

Optuna's own PyTorchLightningPruningCallback (optuna-integration) raises at the end of fit; this one
lets the run end like early stopping does, so a pruned trial still tests its best epoch and writes
metrics.json (with `pruned: true`), and the sweeper records it as pruned.
"""

from __future__ import annotations

import math
from typing import Optional

import lightning.pytorch as L
import optuna


class Pruning(L.Callback):
    def __init__(self, trial: optuna.Trial, monitor: str):
        self.trial, self.monitor = trial, monitor
        self.stopped: Optional[tuple[int, str]] = None

    @property
    def pruned(self) -> bool:
        return self.stopped is not None

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        epoch, value = trainer.current_epoch, float(trainer.callback_metrics[self.monitor])
        if not math.isfinite(value):
            return  # a NaN is early stopping's and the divergence check's business
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            pruner = type(self.trial.study.pruner).__name__.removesuffix("Pruner").lower()
            self.stopped = (epoch, f"pruned by the {pruner} pruner at epoch {epoch} ({self.monitor}={value:.4f})")
            trainer.should_stop = True
