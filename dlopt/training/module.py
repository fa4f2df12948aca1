"""The LightningModule every run trains: cross-entropy classification of any `net`.

Regularization lives here: weight decay through the optimizer (optionally not on biases and
normalization weights), an L1 penalty added to the loss, label smoothing and class weights in
the training loss. Validation and test losses are plain cross-entropy, so runs with different
regularization compare on the same measure. Training targets may be class probabilities
(mixup, cutmix); accuracy then counts the most probable class.

Metrics (loss, accuracy, macro F1, calibration error) are torchmetrics objects updated every step and logged once
per epoch: a `self.log` call per step costs more than a small network's step. The gradient norm
(before and after clipping) goes to the logger every `trainer.log_every_n_steps` optimizer steps.

An optimizer that takes a closure and evaluates it several times per step (torch.optim.LBFGS: its
iterations and line search) runs training_step, backward and gradient clipping at every evaluation.
The epoch's training metrics count the first evaluation of each step only (the loss before the
update, as with every other optimizer), and the gradient norm is logged once per step.
With several processes (DDP), the loss LBFGS sees is their mean, as its gradient is.
An optimizer without a `weight_decay` argument (LBFGS) gets regularization.weight_decay as the
penalty (weight_decay / 2) * sum of ||w||^2 in the training loss, over the parameters weight
decay would cover (not biases and norms with exclude_norm_bias; the transfer's param groups):
its gradient weight_decay * w is exactly SGD's (coupled) weight decay, and a line search sees the
same loss the gradient belongs to. Like weight decay, it is not part of train/loss.

A non-finite loss raises `Diverged`; the run decides whether that fails the run or stops it early.
Checkpoints carry the random number generators' states, so that a resumed run draws the same
dropout masks and augmentations as one that was never interrupted.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError, MulticlassF1Score

from dlopt.errors import UserError
from dlopt.terminal import FILE_ONLY
from dlopt.training.clipping import adaptive_clip_grad, grad_norm
from dlopt.training.logged import EPOCH_METRICS, L1_METRIC, PROGRESS, SPLITS
from dlopt.training.report import write_json

if TYPE_CHECKING:
    from dlopt.training.transfer import Transfer


log = logging.getLogger(__name__)


class Diverged(UserError):
    """The training or validation loss became NaN or infinite."""


class CalibrationError(MulticlassCalibrationError):
    """The expected calibration error (15 bins, L1) of the softmax of the logits. torchmetrics bins a confidence of
    exactly 1.0 (a float32 softmax saturates there) in a 16th bin of its own (its issue 3510); it is counted in the
    last bin, [14/15, 1], as the definition has it. Logits are always turned into probabilities here: torchmetrics
    would take logits that happen to lie in [0, 1] for probabilities."""

    def __init__(self, num_classes: int):
        super().__init__(num_classes, n_bins=15, norm="l1", validate_args=False)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        super().update(logits.float().softmax(1).clamp(max=1 - 2**-24), target)


@dataclass
class RunContext:
    """What the module knows of the run that trains it, given when it is built (dlopt.training.run, lr_find)."""

    started_at: float = field(default_factory=time.perf_counter)  # when this process started the run
    history_file: Optional[Path] = None  # history.json, rewritten every epoch (by rank 0 of several processes)
    epoch_lines_to_file: bool = False  # epoch log lines to the run's log file only (a sweep's run)
    # dlopt tune-lr: the range test's recorder (dlopt.training.lr_find.StepLosses), called from on_train_start and
    # on_train_batch_end since Lightning's range test runs its own callback only; with it, a non-finite loss ends the
    # test, not the run
    range_test: Optional[L.Callback] = None


class Classifier(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Optional[Callable[[torch.optim.Optimizer], Any]] = None,
        *,
        num_classes: int,
        input_shift: torch.Tensor,
        input_scale: torch.Tensor,
        weight_decay: float = 0.0,
        exclude_norm_bias: bool = False,
        l1: float = 0.0,
        label_smoothing: float = 0.0,
        class_weights: Optional[torch.Tensor] = None,
        monitor: str = "val/loss",
        clip_factor: Optional[float] = None,
        clip_eps: float = 1e-3,
        warmup_epochs: int = 0,
        config: Optional[dict] = None,
        transfer: Optional[Transfer] = None,
        context: Optional[RunContext] = None,
    ):
        super().__init__()
        self.net = net
        self.make_optimizer, self.make_scheduler = optimizer, scheduler
        self.warmup_epochs = warmup_epochs  # epochs of linear warmup before the scheduler (scheduler.warmup_epochs)
        # normalization statistics of the training split: saved in every checkpoint
        self.register_buffer("input_shift", input_shift)
        self.register_buffer("input_scale", input_scale)
        self.register_buffer("class_weights", class_weights)
        self.weight_decay, self.exclude_norm_bias, self.l1 = weight_decay, exclude_norm_bias, l1
        self.label_smoothing, self.monitor = label_smoothing, monitor
        self.clip_factor, self.clip_eps = clip_factor, clip_eps  # adaptive clipping (clip=agc) when set
        self.config = config
        self.transfer = transfer  # when the network comes from another run: its param groups and callbacks
        self.context = context if context is not None else RunContext()
        made = {"acc": lambda: MulticlassAccuracy(num_classes, average="micro", validate_args=False),
                "f1": lambda: MulticlassF1Score(num_classes, average="macro", validate_args=False),
                "ece": lambda: CalibrationError(num_classes)}
        # each split's scores (EPOCH_METRICS); keyed "train_" etc.: a ModuleDict key may not shadow nn.Module.train
        self.scores = nn.ModuleDict({f"{split}_": MetricCollection({name: made[name]() for name in EPOCH_METRICS[split]
                                                                    if name != "loss"}) for split in SPLITS})
        self.losses = nn.ModuleDict({f"{split}_": MeanMetric(nan_strategy="disable") for split in SPLITS})
        self.l1_penalty = MeanMetric(nan_strategy="disable")
        self.history: list[dict[str, float]] = []  # one row of epoch metrics per epoch, for curves.png
        self.earlier_wall_time = 0.0  # seconds the run took in the processes before a resume
        self._val_row: dict[str, float] = {}
        # the training step being evaluated, (epoch, global_step, batch_idx), and its evaluation, from 1: an
        # optimizer that calls its closure several times per step (LBFGS) evaluates the same step again
        self._evaluating: Optional[tuple[int, int, int]] = None
        self.evaluation = 0
        # the parameters of the L2 penalty in the training loss: weight decay for an optimizer without a
        # weight_decay argument (set by configure_optimizers)
        self.l2_params: list[nn.Parameter] = []
        self.step_loss: Optional[torch.Tensor] = None  # the training loss of the step's first evaluation

    @property
    def reevaluating(self) -> bool:
        """Whether the current training step evaluates a batch already evaluated in the same optimizer step
        (LBFGS's further iterations and line search): what it computes is not counted again."""
        return self.evaluation > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.input_shift) / self.input_scale)

    def _step(self, batch, split: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        if split == "train":
            loss = F.cross_entropy(logits, y, weight=self.class_weights, label_smoothing=self.label_smoothing)
            if self.reevaluating:  # counted at the step's first evaluation
                return loss
        else:
            loss = F.cross_entropy(logits, y)
        # one value per sample: MeanMetric(nan_strategy="disable") drops a weight (torchmetrics issue 3434)
        self.losses[f"{split}_"].update(loss.detach().expand(len(y)))
        self.scores[f"{split}_"].update(logits.detach(), y.argmax(1) if y.is_floating_point() else y)
        return loss

    def _diverged(self, what: str, value: float, where: str) -> Diverged:
        group = self.trainer.optimizers[0].param_groups[0]
        lr = group["lr"]
        if "line_search_fn" not in group:
            remedy = "try a lower optimizer.lr or trainer.gradient_clip_val=1.0"
        elif group["line_search_fn"] is None:  # LBFGS taking fixed steps of lr
            remedy = "try optimizer.line_search_fn=strong_wolfe or a lower optimizer.lr"
        else:  # a line search's trial step; clipping would make the gradient disagree with the loss it searches
            remedy = "try a lower optimizer.lr"
        return Diverged(f"the {what} loss became {value} at {where} (optimizer.lr={lr:g}): {remedy}")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        step = (self.current_epoch, self.global_step, batch_idx)
        self.evaluation = self.evaluation + 1 if step == self._evaluating else 1
        self._evaluating = step
        loss = self._step(batch, "train")
        if not torch.isfinite(loss):
            if self.context.range_test:  # skip this step; the range test records its loss as NaN
                self.trainer.should_stop = True
                return None
            where = f"epoch {self.current_epoch + 1}, step {self.global_step}"
            if self.reevaluating:  # parameters the optimizer tried within the step (LBFGS's line search)
                where += f", evaluation {self.evaluation} of the step"
            raise self._diverged("training", loss.item(), where)
        if self.l1:
            penalty = self.l1 * sum(p.abs().sum() for p in self.parameters() if p.dim() > 1)
            if not self.reevaluating:
                self.l1_penalty.update(penalty.detach())
            loss = loss + penalty
        if self.l2_params:
            loss = loss + self.weight_decay / 2 * sum(p.square().sum() for p in self.l2_params)
        if self._trainer is not None and self.trainer.world_size > 1 and self.trainer.optimizers \
                and "line_search_fn" in self.trainer.optimizers[0].defaults:
            # LBFGS decides on loss values (line search, tolerance_change) and gets the gradient averaged over the
            # processes: its loss must be their mean too, or each process steps its own way and the next evaluation
            # waits forever for the others' gradients. The value becomes the mean, the gradient stays this process's.
            mean = self.trainer.strategy.reduce(loss.detach().clone(), reduce_op="mean")
            loss = loss + (mean - loss).detach()
        if not self.reevaluating:  # the step's loss before its update (Lightning's outputs hold the last evaluation's)
            self.step_loss = loss.detach()
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.context.range_test:
            self.context.range_test.on_train_batch_end(self.trainer, self, outputs, batch, batch_idx)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def _log_epoch(self, split: str) -> dict[str, float]:
        values = {f"{split}/loss": self.losses[f"{split}_"].compute()}
        values.update({f"{split}/{k}": v for k, v in self.scores[f"{split}_"].compute().items()})
        self.losses[f"{split}_"].reset()
        self.scores[f"{split}_"].reset()
        if split == "train" and self.l1:
            values[L1_METRIC] = self.l1_penalty.compute()
            self.l1_penalty.reset()
        shown = {k: v for k, v in values.items() if split != "test" and k.split("/")[1] in PROGRESS}
        self.log_dict({k: v for k, v in values.items() if k not in shown}, on_epoch=True)
        self.log_dict(shown, on_epoch=True, prog_bar=True)
        return {k: float(v) for k, v in values.items()}

    def on_train_start(self) -> None:
        self._evaluating, self.evaluation = None, 0  # a module may be fitted again (dlopt tune-lr's range test)
        if self.context.range_test:
            self.context.range_test.on_train_start(self.trainer, self)

    def on_fit_start(self) -> None:
        # Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 at import so that picking devices cannot
        # poison a later fork; left set, torch asks NVML for the device count at every optimizer
        # step (~0.3 ms here). Devices and processes are settled once fit starts.
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)

    def on_validation_epoch_end(self) -> None:
        self._val_row = self._log_epoch("val")
        if not math.isfinite(self._val_row["val/loss"]) and self.trainer.state.fn == "fit" \
                and not self.context.range_test:
            raise self._diverged("validation", self._val_row["val/loss"], f"epoch {self.current_epoch + 1}")

    def on_train_epoch_start(self) -> None:
        self._epoch_lr = self.trainer.optimizers[0].param_groups[0]["lr"]  # before the scheduler steps

    def on_train_epoch_end(self) -> None:
        # epochs are numbered from 1 in everything dlopt writes (Lightning's current_epoch counts from 0)
        row = {"epoch": self.current_epoch + 1, "lr": self._epoch_lr}
        self.history.append({**row, **self._log_epoch("train"), **self._val_row})
        if self.context.history_file is not None:
            write_json(self.history, self.context.history_file, indent=None)
        if not self.context.range_test:
            self._log_line(self.history[-1])

    def _log_line(self, row: dict[str, float]) -> None:
        """One line per epoch, `epoch 3/30: train/loss 0.41 train/acc 0.88 val/loss 0.35 val/acc 0.9`: to the run's
        log file only while a progress bar shows the same numbers or in a sweep, to the terminal too otherwise (also
        in place of the bar where stdout is not a terminal: dlopt.training.run.no_bar_off_terminal)."""
        total = self.trainer.max_epochs
        shown = " ".join(f"{split}/{k} {row[f'{split}/{k}']:.4g}" for split in ("train", "val") for k in PROGRESS
                         if f"{split}/{k}" in row)
        bar = self.trainer.progress_bar_callback
        log.info("epoch %d%s: %s", row["epoch"], f"/{total}" if total and total > 0 else "", shown,
                 extra=FILE_ONLY if self.context.epoch_lines_to_file or bar is not None and bar.is_enabled else None)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        every = self.trainer.log_every_n_steps
        # once per step: LBFGS clips (through this hook) at every evaluation of its closure
        watch = self.logger is not None and every and self.global_step % every == 0 and not self.reevaluating
        clips = bool(gradient_clip_val) or bool(self.clip_factor)
        norms = {"grad/norm": grad_norm(self.parameters())} if watch else {}
        if self.clip_factor:
            adaptive_clip_grad(self.parameters(), self.clip_factor, self.clip_eps)
        else:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if watch:
            if clips:
                norms["grad/norm_clipped"] = grad_norm(self.parameters())
            self.logger.log_metrics(norms, step=self.global_step)

    def configure_optimizers(self):
        # one group; with transfer learning the head's, then the backbone's with its lr_scale
        groups = self.transfer.param_groups(self.net) if self.transfer else \
            [{"params": [p for p in self.parameters() if p.requires_grad]}]
        decays = self._takes_weight_decay()
        # without a weight_decay argument, weight decay is the L2 penalty in training_step, over these parameters
        self.l2_params = [] if decays or not self.weight_decay else \
            [p for g in groups for p in g["params"] if p.dim() > 1 or not self.exclude_norm_bias]
        if self.exclude_norm_bias and self.weight_decay and decays:
            groups = [{**g, "params": [p for p in g["params"] if p.dim() > 1]} for g in groups] + \
                     [{**g, "params": [p for p in g["params"] if p.dim() <= 1], "weight_decay": 0.0}  # biases, norms
                      for g in groups]
        groups = [g for g in groups if g["params"]]
        optimizer = self._optimizer(groups, {"weight_decay": self.weight_decay} if decays else {})
        for group in optimizer.param_groups:
            group["lr"] *= group.get("lr_scale", 1.0)
        if self.make_scheduler is None:
            return optimizer
        per_step, extra = self._scheduler_arguments(optimizer)
        try:
            scheduler = self.make_scheduler(optimizer, **extra)
        except ValueError as err:
            raise UserError(f"scheduler: torch.optim.lr_scheduler refuses its settings: {err}") from None
        if self.warmup_epochs:
            scheduler = self._warmup(optimizer, scheduler, per_step)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor,
                                                         "interval": "step" if per_step else "epoch"}}

    def _takes_weight_decay(self) -> bool:
        """Whether the optimizer takes a weight_decay argument (LBFGS does not)."""
        import inspect

        try:
            takes = inspect.signature(self.make_optimizer).parameters
        except (TypeError, ValueError):  # a callable without a signature: as every torch.optim optimizer but LBFGS
            return True
        return "weight_decay" in takes or any(p.kind is p.VAR_KEYWORD for p in takes.values())

    def _optimizer(self, groups: list[dict[str, Any]], extra: dict[str, Any]) -> torch.optim.Optimizer:
        """The optimizer of these param groups. One that takes a single group (LBFGS) gets them as one when they
        differ in their parameters only; when they differ in their settings, it is refused in one line."""
        try:
            return self.make_optimizer([dict(g) for g in groups], **extra)  # copies: torch.optim adds its defaults
        except ValueError as err:  # torch.optim's own range checks ("Invalid alpha value: -1")
            refusal = err
        if len(groups) > 1 and "param" in str(refusal) and "group" in str(refusal):
            settings = [{"lr_scale": 1.0, **{k: v for k, v in g.items() if k != "params"}} for g in groups]
            if all(s == settings[0] for s in settings):
                return self._optimizer([{**groups[0], "params": [p for g in groups for p in g["params"]]}], extra)
            if self.transfer:
                raise UserError(f"optimizer: {refusal}; transfer.strategy={self.transfer.strategy} trains the backbone "
                                f"at optimizer.lr x transfer.backbone_lr_scale={self.transfer.backbone_lr_scale:g}, a "
                                "param group of its own: set transfer.backbone_lr_scale=1.0 or choose another "
                                "optimizer") from None
        raise UserError(f"optimizer: torch.optim refuses its settings: {refusal}") from None

    def _scheduler_arguments(self, optimizer: torch.optim.Optimizer) -> tuple[bool, dict[str, Any]]:
        """Whether the scheduler steps every optimizer step (it takes `total_steps`, as OneCycleLR does),
        and what the run adds to its arguments: the run's optimizer steps as total_steps when none
        is given, and a max_lr per param group that keeps each group's lr_scale (transfer learning)."""
        import inspect

        given = getattr(self.make_scheduler, "keywords", {})
        try:
            takes = inspect.signature(self.make_scheduler).parameters
        except (TypeError, ValueError):  # a callable without a signature: stepped per epoch
            return False, {}
        if "total_steps" not in takes:
            return False, {}
        extra: dict[str, Any] = {}
        if given.get("total_steps") is None and given.get("epochs") is None:
            # a placeholder in run.py's early check of the settings, before a trainer is attached
            total = self.trainer.estimated_stepping_batches if self._trainer is not None else 1
            if not math.isfinite(total):
                raise UserError("scheduler: it is stepped every optimizer step and needs the run's number of steps; "
                                "set trainer.max_epochs (or trainer.max_steps)")
            extra["total_steps"] = max(1, int(total))
        max_lr = given.get("max_lr")
        if isinstance(max_lr, (int, float)) and any(g.get("lr_scale", 1.0) != 1.0 for g in optimizer.param_groups):
            extra["max_lr"] = [max_lr * g.get("lr_scale", 1.0) for g in optimizer.param_groups]
        return True, extra

    def _warmup(self, optimizer: torch.optim.Optimizer, scheduler, per_step: bool):
        """`scheduler` after warmup_epochs epochs of linear warmup: epoch e < warmup_epochs trains at
        the lr x (e + 1) / (warmup_epochs + 1) (torch's LinearLR, then SequentialLR)."""
        from torch.optim.lr_scheduler import LinearLR, ReduceLROnPlateau, SequentialLR

        name = type(scheduler).__name__
        if per_step:
            raise UserError(f"scheduler.warmup_epochs={self.warmup_epochs}: {name} is stepped every optimizer step "
                            f"and warms up itself (scheduler.pct_start); remove scheduler.warmup_epochs")
        if isinstance(scheduler, ReduceLROnPlateau):
            raise UserError(f"scheduler.warmup_epochs={self.warmup_epochs}: {name} cannot follow a warmup "
                            f"(torch's SequentialLR does not take it); remove scheduler.warmup_epochs")
        warmup = LinearLR(optimizer, start_factor=1.0 / (self.warmup_epochs + 1), end_factor=1.0,
                          total_iters=self.warmup_epochs)
        return SequentialLR(optimizer, [warmup, scheduler], milestones=[self.warmup_epochs])

    def configure_callbacks(self):
        return self.transfer.callbacks() if self.transfer else []

    def wall_time_s(self) -> float:
        """Seconds the run has taken, over every process that trained it (a resumed run has several)."""
        return self.earlier_wall_time + time.perf_counter() - self.context.started_at

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # torch's generator draws every dropout mask and augmentation (kornia, torchvision v2)
        checkpoint["dlopt"] = {"config": self.config, "history": self.history, "rng": torch.get_rng_state(),
                               "wall_time_s": self.wall_time_s()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("dlopt", {})
        self.history = list(saved.get("history", []))
        if self.history and self.history[0].get("epoch") == 0:  # saved by a dlopt that counted epochs from 0
            self.history = [{**row, "epoch": row["epoch"] + 1} for row in self.history]
        self.earlier_wall_time = float(saved.get("wall_time_s", 0.0))
        if "rng" in saved and self._trainer is not None and self.trainer.state.fn == "fit":  # resuming
            torch.set_rng_state(saved["rng"])
