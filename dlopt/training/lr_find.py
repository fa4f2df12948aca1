"""The learning-rate range test of `dlopt tune-lr`: Lightning's Tuner.lr_find on the run `dlopt train` would make.

Lightning raises the lr from lr_find.min_lr to max_lr over num_training training steps (one batch
each) and restores the weights from a temporary checkpoint it then deletes. While it runs, Lightning
swaps the config's callbacks (checkpoints, early stopping) and logger for its own recorder, so they
write nothing. That recorder's smoothed loss is biased low at the start (it divides the moving
average of the first step by 1 - 0.98^2 instead of 1 - 0.98, so the first value is half the true
loss and the curve seems to rise: Lightning-AI/pytorch-lightning#14167), and its early stop compares
with that too-low start. So `StepLosses` records every step's loss itself, smooths it with the same
moving average correctly bias-corrected, and stops the test once that exceeds EARLY_STOP x its lowest;
the plot, the suggestion and the stop reason use these values. Writes lr_find.png (also a
TensorBoard figure) and lr_find.json.
"""

from __future__ import annotations

import logging
import math
import statistics
from pathlib import Path
from typing import Optional

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig

from dlopt.terminal import file_only_lines
from dlopt.training import report
from dlopt.training.module import RunContext
from dlopt.training.run import _trainer, build, lightning_config_errors

log = logging.getLogger(__name__)
# Lightning's own lines on stopping early ("due to diverging loss", also when the data ran out) and on a
# missing suggestion: `find` says how the test ended, in dlopt's words
logging.getLogger("lightning.pytorch.tuner.lr_finder").addFilter(lambda record: False)

# Lightning's lines on the checkpoint its range test saves the weights to and restores them from, then deletes
# (.lr_find_UUID.ckpt in the run folder; saved without weights_only, which Lightning says it then defaults to False):
# to the log file only. The terminal says where the test's results are.
file_only_lines("lightning.pytorch.trainer.connectors.checkpoint_connector", "`weights_only` was not set")
file_only_lines("lightning.pytorch.utilities.rank_zero", ".lr_find_")

EARLY_STOP = 4.0  # Lightning's default: stop once the smoothed loss exceeds 4 x its lowest
BETA = 0.98  # Lightning's smoothing: each step's loss enters the moving average with weight 1 - BETA


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


class StepLosses(Callback):
    """Every step's training loss (`raw`) and its moving average with weight BETA on the past, divided by
    1 - BETA^steps so that it is an average from the first step on (`smoothed`); sets trainer.should_stop
    once that average exceeds EARLY_STOP x its lowest, or the loss is not finite (`diverged`).

    One value per optimizer step, as Lightning's range test records one lr per optimizer step."""

    def __init__(self, bar: bool = True) -> None:
        self.bar = bar  # Lightning's bar of the test ("Finding best initial lr"), drawn where the run shows its bar
        self.raw: list[float] = []
        self.smoothed: list[float] = []
        self.diverged = False
        self._average = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.bar:  # Lightning's recorder draws its bar when asked to (its progress_bar_refresh_rate)
            for callback in trainer.callbacks:
                if hasattr(callback, "progress_bar_refresh_rate"):
                    callback.progress_bar_refresh_rate = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return
        loss = float(outputs["loss"]) if outputs else math.nan  # no outputs: dlopt's step skipped a non-finite loss
        self._average = BETA * self._average + (1 - BETA) * loss
        self.raw.append(loss)
        self.smoothed.append(self._average / (1 - BETA ** len(self.raw)))
        if not math.isfinite(self.smoothed[-1]) or self.smoothed[-1] > EARLY_STOP * min(self.smoothed):
            self.diverged = trainer.should_stop = True


def find(cfg: DictConfig, run_dir: Path, command: str = "dlopt train") -> Optional[float]:
    """Run the range test of cfg.lr_find on cfg's data and model; write lr_find.png and lr_find.json.

    Returns the suggested lr, or None (with a warning saying why) when the losses allow none.
    `command` is what the log line suggests to run with that lr."""
    spec = cfg.lr_find
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    steps = StepLosses()
    data, module = build(cfg, context=RunContext(range_test=steps))
    with lightning_config_errors():
        trainer = _trainer(cfg, run_dir)
        steps.bar = trainer.progress_bar_callback is not None  # none off a terminal (run.no_bar_off_terminal)
        finder = Tuner(trainer).lr_find(  # no early stop of Lightning's: StepLosses stops the test
            module, datamodule=data, min_lr=spec.min_lr, max_lr=spec.max_lr, num_training=spec.num_training,
            mode=spec.schedule, early_stop_threshold=None, update_attr=False,
        )
    lrs, raw, smoothed = [float(x) for x in finder.results["lr"]], steps.raw, steps.smoothed
    best = steepest(lrs, smoothed, spec.schedule)
    suggested = None if best is None else lrs[best]
    stopped = _stopped(steps, spec.num_training)

    _plot(lrs, steps, best, spec.schedule, trainer.logger, run_dir / "lr_find.png")
    report.write_json({
        "suggested_lr": suggested, "min_lr": spec.min_lr, "max_lr": spec.max_lr, "schedule": spec.schedule,
        "num_training": spec.num_training, "steps": len(raw), "diverged": steps.diverged, "smoothing": BETA,
        "lr": lrs, "loss": smoothed, "raw_loss": raw,
    }, run_dir / "lr_find.json")

    if suggested is None:
        remedy = ("lower lr_find.min_lr" if steps.diverged else "raise lr_find.num_training"
                  if len(raw) == spec.num_training else "raise trainer.max_epochs or trainer.limit_train_batches")
        log.warning("no lr suggested: %s; the slope needs 2 finite losses after the first 10 steps: %s -> %s",
                    stopped, remedy, run_dir / "lr_find.png")
        return None
    log.info("range test: %s", stopped)
    log.info("suggested optimizer.lr=%.2g  (%s optimizer.lr=%.2g) -> %s", suggested, command, suggested,
             run_dir / "lr_find.png")
    return suggested


SCATTER = 3.0  # lr_find.png's y axis: this many times the steps' noise above the smoothed loss
WINDOW = 9  # steps in the running median that the noise is measured from


def loss_limits(raw: list[float], smoothed: list[float], diverged: bool) -> Optional[tuple[float, float]]:
    """lr_find.png's y range, so that one spike of a step's loss (16 where the curve lives in 0.3-2.5) cannot
    flatten the curve: up to where the test stopped (without the step that crossed the divergence threshold; the
    plots of Lightning and fastai drop the last steps likewise, and draw only the smoothed loss), from the lowest
    loss to the highest smoothed loss plus SCATTER x the steps' noise (the median distance of a step's loss from the
    running median of WINDOW steps around it, which a spike does not move), but not above the highest step loss;
    up to the divergence threshold if the test diverged; then 5% of the span on either side. None without a finite
    smoothed loss."""
    stop = len(smoothed) - 1 if diverged and len(smoothed) > 1 else len(smoothed)
    curve = [y for y in smoothed[:stop] if math.isfinite(y)]
    steps = [y for y in raw[:stop] if math.isfinite(y)]
    if not curve:
        return None
    half = WINDOW // 2
    medians = [statistics.median(steps[max(0, i - half):i + half + 1]) for i in range(len(steps))]
    noise = statistics.median(abs(y - m) for y, m in zip(steps, medians)) if steps else 0.0
    low = min(curve + steps)
    high = min(max(curve) + SCATTER * noise, max(steps, default=math.inf))
    if diverged:
        high = max(high, EARLY_STOP * min(curve))
    pad = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
    return low - pad, high + pad


def lr_limits(lrs: list[float]) -> Optional[tuple[float, float]]:
    """lr_find.png's x range on a log axis when the test stopped within a decade (after a step or two): from the power
    of ten a quarter decade or more below the lowest lr to the one a quarter decade or more above the highest, so
    the ticks are powers of ten, labelled apart, rather than a fraction of a decade's crowded minor labels (2 decades
    around a lone lr). None (matplotlib's own range) when the lrs span a decade or more."""
    positive = [math.log10(x) for x in lrs if x > 0 and math.isfinite(x)]
    if not positive or max(positive) - min(positive) >= 1:
        return None
    return 10.0 ** math.floor(min(positive) - 0.25), 10.0 ** math.ceil(max(positive) + 0.25)


def _figure(lrs: list[float], steps: StepLosses, best: Optional[int], schedule: str):
    """lr_find.png's figure (`_plot`)."""
    raw, smoothed = steps.raw, steps.smoothed
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.2), layout="constrained")
    ax.plot(lrs, raw, ".-", color="tab:blue", alpha=0.3, linewidth=1, markersize=3, label="loss of each step")
    ax.plot(lrs, smoothed, color="tab:blue", label=f"smoothed (moving average, {BETA:g} on the past)")
    if best is not None:
        ax.plot(lrs[best], smoothed[best], marker="o", markersize=10, color="red", linestyle="none",
                label=f"suggested {lrs[best]:.2g}")
    finite = [y for y in smoothed if math.isfinite(y)]
    if steps.diverged and finite:
        ax.axhline(EARLY_STOP * min(finite), color="grey", linestyle=":", linewidth=1,
                   label=f"divergence: {EARLY_STOP:g} x the lowest smoothed")
    limits = loss_limits(raw, smoothed, steps.diverged)
    if limits is not None:
        ax.set_ylim(*limits)
    top = ax.get_ylim()[1]
    above = [(x, y) for x, y in [*zip(lrs, raw), *zip(lrs, smoothed)] if y > top]  # NaN compares False
    marks = [("^", [x for x, _ in above], f"above the axis (up to {max(y for _, y in above):.3g})" if above else ""),
             ("x", [x for x, y in zip(lrs, raw) if math.isnan(y)], "not a number")]
    for marker, xs, what in marks:
        if xs:
            ax.plot(xs, [top] * len(xs), marker, color="black", markersize=6, linestyle="none", clip_on=False,
                    label=f"{len(xs)} {'loss' if len(xs) == 1 else 'losses'} {what}, at the top edge")
    clipped = ", y axis clipped" if above else ""
    ax.set(xlabel="learning rate", ylabel="training loss", xscale="log" if schedule == "exponential" else "linear",
           title="LR range test" + ("" if best is not None else ": no suggestion") + clipped)
    if schedule == "exponential" and (limits := lr_limits(lrs)) is not None:
        ax.set_xlim(*limits)
    ax.grid(alpha=0.3, which="both")
    report.legend_below(fig, ncol=2, fontsize=8)
    return fig


def _plot(lrs: list[float], steps: StepLosses, best: Optional[int], schedule: str, logger, path: Path) -> None:
    """lr_find.png, also a TensorBoard figure: each step's loss and the smoothed one over the lr, the suggestion
    (`best`, an index) marked, the y axis from `loss_limits` (losses beyond it marked at its edge), the legend
    below the axes."""
    fig = _figure(lrs, steps, best, schedule)
    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_figure("lr_find", fig, close=False)
        logger.experiment.flush()
    report.save_figure(fig, path)


def _stopped(steps: StepLosses, num_training: int) -> str:
    """How the test ended, in words."""
    done, last = len(steps.raw), steps.smoothed[-1] if steps.smoothed else math.nan
    if done == num_training and not steps.diverged:
        return f"all {done} steps ran"
    if steps.diverged:
        why = (f"the smoothed loss {last:.3g} > {EARLY_STOP:g} x its lowest {min(steps.smoothed):.3g}"
               if math.isfinite(last) else f"the loss became {steps.raw[-1]}")
        return f"the loss diverged after {done} of {num_training} steps ({why})"
    return f"the data ran out after {done} of {num_training} steps (trainer.max_epochs x batches per epoch)"
