"""A continued run trains what its config says, and keeps a record of its continuations.

`dlopt train resume=` adds `Resumed` to the run's callbacks. When training starts, after Lightning restored the
checkpoint, it appends to the run's resumes.json (read by dlopt.saved_run) from which epoch the resume's overrides
apply; a resume that fails before it trains leaves the file as it was.

Lightning restores more than weights: the optimizer's and scheduler's settings and early stopping's patience come
back from the checkpoint, so a resume that changes them (a longer cosine schedule through trainer.max_epochs, a
higher patience, resume_changes=true optimizer=sgd) would silently train with the old ones. Before Lightning restores
them, the checkpoint's optimizer and scheduler states are brought in line with those the config builds now: the
optimizer's settings are the config's (its state, e.g. Adam's moments, is kept unless the optimizer class changed),
and a changed schedule is the new one as if it had run from the start, at the step the run has reached. A resume
that changes nothing restores them untouched.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as L
from lightning.pytorch.callbacks import EarlyStopping
from torch.optim.lr_scheduler import ReduceLROnPlateau

from dlopt import saved_run
from dlopt.training.report import write_json

log = logging.getLogger(__name__)
SCHEDULED = ("lr", "initial_lr")  # param group values the scheduler sets, not the optimizer's config
PLATEAU_SETTINGS = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lrs", "eps")


class Resumed(L.Callback):
    def __init__(self, run_dir: Path, overrides: list[str], changed: dict[str, dict[str, Any]]):
        self.run_dir, self.overrides, self.changed = run_dir, overrides, changed
        self._patience: dict[int, int] = {}
        self._checkpoint: Optional[dict[str, Any]] = None

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        # before the checkpoint is restored: the patience the config asks for
        self._patience = {id(c): c.patience for c in trainer.callbacks if isinstance(c, EarlyStopping)}

    def on_load_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._checkpoint = checkpoint  # Lightning restores the optimizer and scheduler from it after on_fit_start

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        for callback in trainer.callbacks:
            if id(callback) in self._patience:
                callback.patience = self._patience[id(callback)]
        if self._checkpoint is not None and len(trainer.optimizers) == 1:
            follow_config(trainer, self._checkpoint)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        record = {"from_epoch": trainer.current_epoch + 1, "overrides": self.overrides, "changed": self.changed,
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        named = f"resume={self.run_dir}"
        write_json([*saved_run.resumes(self.run_dir, named), record], self.run_dir / saved_run.RESUMES)


def follow_config(trainer: L.Trainer, checkpoint: dict[str, Any]) -> None:
    """Rewrite the checkpoint's optimizer and scheduler states (in place, before Lightning loads them) to those of the
    freshly configured optimizer and scheduler, where they differ (see the module docstring)."""
    optimizer = trainer.optimizers[0]
    fresh = optimizer.state_dict()
    saved = checkpoint["optimizer_states"][0]
    then = ((checkpoint.get("dlopt") or {}).get("config") or {}).get("optimizer") or {}
    now = (getattr(trainer.lightning_module, "config", None) or {}).get("optimizer") or {}
    if then.get("_target_") != now.get("_target_") or len(saved["param_groups"]) != len(fresh["param_groups"]):
        log.info("resume: the optimizer changed; its state (momentum, moments) starts afresh")
        saved = checkpoint["optimizer_states"][0] = fresh
    for was, group in zip(saved["param_groups"], fresh["param_groups"]):
        was.update({k: v for k, v in group.items() if k not in ("params", *SCHEDULED)})
    configs = trainer.lr_scheduler_configs
    if not configs or not checkpoint.get("lr_schedulers"):
        for was, group in zip(saved["param_groups"], fresh["param_groups"]):
            was["lr"] = group["lr"]
        return
    scheduler, was_scheduled = configs[0].scheduler, checkpoint["lr_schedulers"][0]
    if isinstance(scheduler, ReduceLROnPlateau):  # stepped by a metric: its settings change, its counters carry on
        was_scheduled.update({k: v for k, v in scheduler.state_dict().items() if k in PLATEAU_SETTINGS})
        if then != now:
            for was, group in zip(saved["param_groups"], optimizer.param_groups):
                was["lr"] = group["lr"]
        return
    steps = was_scheduled.get("last_epoch")
    if isinstance(steps, int):
        with warnings.catch_warnings():  # stepping before any optimizer step: torch warns about the order
            warnings.simplefilter("ignore")
            while scheduler.last_epoch < steps:
                scheduler.step()
    now_scheduled = scheduler.state_dict()
    if _plain(now_scheduled) != _plain(was_scheduled):
        log.info("resume: the learning rate schedule changed; it continues as the new one at its step %s", steps)
        checkpoint["lr_schedulers"][0] = now_scheduled
        for was, group in zip(saved["param_groups"], optimizer.param_groups):
            was.update({k: group[k] for k in SCHEDULED if k in group})


def _plain(state: dict[str, Any]) -> dict[str, Any]:
    """A scheduler's state without the references to functions it may hold (LambdaLR): what can be compared."""
    return {k: v for k, v in state.items() if not callable(v)}
