"""The learning-rate range test of `dlopt tune-lr`: Lightning's Tuner.lr_find on the run `dlopt train` would make.

Lightning raises the lr from lr_find.min_lr to max_lr over num_training training steps (one batch
each), records a smoothed training loss, stops once it exceeds four times its best, and restores the
weights from a temporary checkpoint it then deletes. While it runs, Lightning swaps the config's
callbacks (checkpoints, early stopping) and logger for its own recorder, so they write nothing.
Its smoothing makes the loss of the first steps rise (Lightning-AI/pytorch-lightning#14167): a
rise is never the steepest fall, so the suggestion (worked out here, see `steepest`) does not move.
Writes lr_find.png (also a TensorBoard figure) and lr_find.json.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig

from dlopt.training import report
from dlopt.training.run import _trainer, build, lightning_config_errors

log = logging.getLogger(__name__)
# Lightning's own lines on stopping early ("due to diverging loss", also when the data ran out) and on a
# missing suggestion: `find` says how the test ended, in dlopt's words
logging.getLogger("lightning.pytorch.tuner.lr_finder").addFilter(lambda record: False)

EARLY_STOP = 4.0  # Lightning's default: stop once the smoothed loss exceeds 4 x its best


def steepest(lrs: list[float], losses: list[float], schedule: str, skip_begin: int = 10,
             skip_end: int = 1) -> Optional[int]:
    """The index of the suggested lr: Lightning's rule (the steepest fall of the loss, skipping the first 10
    steps and the last), or None with fewer than 2 finite losses in between.

    Written out because Lightning 2.6 takes the slope over the lr itself also when the lr grows
    exponentially, which favours the smallest lrs (Lightning-AI/pytorch-lightning#21141); here the
    slope is over log10(lr) then, the axis the lrs are evenly spaced on, as the plot shows them."""
    index = torch.arange(len(losses))[skip_begin:-skip_end]
    loss = torch.tensor(losses, dtype=torch.float64)[index]
    index, loss = index[torch.isfinite(loss)], loss[torch.isfinite(loss)]
    if len(index) < 2:
        return None
    lr = torch.tensor(lrs, dtype=torch.float64)[index]
    slope = torch.gradient(loss, spacing=[torch.log10(lr) if schedule == "exponential" else lr])[0]
    return int(index[slope.argmin()])


def find(cfg: DictConfig, run_dir: Path, command: str = "dlopt train") -> Optional[float]:
    """Run the range test of cfg.lr_find on cfg's data and model; write lr_find.png and lr_find.json.

    Returns the suggested lr, or None (with a warning saying why) when the losses allow none.
    `command` is what the log line suggests to run with that lr."""
    spec = cfg.lr_find
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data, module = build(cfg)
    module.range_test = True  # a loss that becomes NaN ends the test instead of the run
    with lightning_config_errors():
        trainer = _trainer(cfg, run_dir)
        finder = Tuner(trainer).lr_find(
            module, datamodule=data, min_lr=spec.min_lr, max_lr=spec.max_lr, num_training=spec.num_training,
            mode=spec.schedule, early_stop_threshold=EARLY_STOP, update_attr=False,
        )
    lrs, losses = finder.results["lr"], finder.results["loss"]
    best = steepest(lrs, losses, spec.schedule)
    suggested = None if best is None else float(lrs[best])
    stopped, diverged = _stopped(losses, spec.num_training)

    fig = finder.plot(suggest=False)  # log lr axis for the exponential schedule, as Lightning draws it
    ax = fig.axes[0]
    if best is not None:
        ax.plot(lrs[best], losses[best], marker="o", markersize=10, color="red", label=f"suggested {suggested:.2g}")
        ax.legend()
    ax.set(xlabel="learning rate", ylabel="training loss (smoothed)",
           title="LR range test" + ("" if best is not None else ": no suggestion"))
    ax.grid(alpha=0.3, which="both")
    if isinstance(trainer.logger, TensorBoardLogger):
        trainer.logger.experiment.add_figure("lr_find", fig, close=False)
        trainer.logger.experiment.flush()
    report.save_figure(fig, run_dir / "lr_find.png")
    report.write_json({
        "suggested_lr": suggested, "min_lr": spec.min_lr, "max_lr": spec.max_lr, "schedule": spec.schedule,
        "num_training": spec.num_training, "steps": len(losses), "diverged": diverged,
        "lr": [float(x) for x in lrs], "loss": [x if math.isfinite(x) else None for x in map(float, losses)],
    }, run_dir / "lr_find.json")

    if suggested is None:
        remedy = ("lower lr_find.min_lr" if diverged else "raise lr_find.num_training"
                  if len(losses) == spec.num_training else "raise trainer.max_epochs or trainer.limit_train_batches")
        log.warning("no lr suggested: %s; the slope needs 2 finite losses after the first 10 steps: %s -> %s",
                    stopped, remedy, run_dir / "lr_find.png")
        return None
    log.info("range test: %s", stopped)
    log.info("suggested optimizer.lr=%.2g  (%s optimizer.lr=%.2g) -> %s", suggested, command, suggested,
             run_dir / "lr_find.png")
    return suggested


def _stopped(losses: list[float], num_training: int) -> tuple[str, bool]:
    """How the test ended, in words, and whether the loss diverged (non-finite, or above EARLY_STOP x its best)."""
    steps, finite = len(losses), [x for x in losses if math.isfinite(x)]
    if steps == num_training:
        return f"all {steps} steps ran", False
    if len(finite) < steps or finite and finite[-1] > EARLY_STOP * min(finite):
        return f"the loss diverged after {steps} of {num_training} steps", True
    return f"the data ran out after {steps} of {num_training} steps (trainer.max_epochs x batches per epoch)", False
