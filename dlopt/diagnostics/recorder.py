"""The Lightning callback behind `diagnostics=default|full`: per-layer gradient norm, weight norm and
update/weight ratio every `every_n_steps` optimizer steps, and the activations of a fixed validation
batch every epoch (the fraction of units that never fired, the fraction saturated, mean and sd).

Written by hand because no maintained library records these cheaply: Cockpit is unmaintained and
fails to import on current setuptools; Lightning's `grad_norm` utility gives gradient norms only.
Records go to `diagnostics.jsonl` in the run folder, one JSON line each, flushed as they are
written (a run that fails in epoch 7 keeps epochs 1-6; epochs count from 1, as in history.json); the
numbers also go to TensorBoard under `diagnostics/` with histograms of gradients and activations;
`diagnostics.png` is drawn when the fit ends. The first time a symptom shows (dlopt.diagnostics.symptoms), one
warning names it. A resumed run keeps the records written up to its checkpoint (the count is in the checkpoint) and
the warnings given, so that after any kill and resume the file holds what an uninterrupted run's holds.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from dlopt.atomic import replacing
from dlopt.diagnostics import symptoms
from dlopt.diagnostics.plot import plot_diagnostics
from dlopt.errors import naming
from dlopt.training.report import strict

log = logging.getLogger(__name__)

FILE = "diagnostics.jsonl"
# activation module -> the name its symptoms use: dead units (ReLU family) or saturation (sigmoid, tanh)
ACTIVATIONS = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.PReLU: "prelu", nn.ELU: "elu", nn.GELU: "gelu",
               nn.SiLU: "silu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}
HISTOGRAM_VALUES = 8192  # values per histogram: a 256x32x8x8 activation in full took 7 ms to bin
HISTOGRAM_BINS = 64  # TensorBoard's default ('tensorflow', ~1500 buckets) took 2.6 ms per histogram, 64 bins 0.7 ms
# their first step moves every weight by lr whatever the gradient: its update ratio says nothing about lr
ADAPTIVE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam, torch.optim.RAdam, torch.optim.Adamax,
            torch.optim.RMSprop, torch.optim.Adagrad, torch.optim.Adadelta)
SATURATION = 0.97  # |tanh| above this, or a sigmoid within 0.015 of 0 or 1, is saturated (Karpathy)


class Recorder(L.Callback):
    def __init__(self, every_n_steps: int = 20, histograms: str = "epoch", every_n_epochs: int = 5,
                 weight_histograms: bool = False,
                 samples: int = 128, thresholds: Optional[dict[str, float]] = None):
        self.every_n_steps, self.histograms, self.weight_histograms = every_n_steps, histograms, weight_histograms
        self.every_n_epochs = every_n_epochs  # histograms=epoch: histograms every N epochs, and the last
        self.samples, self.thresholds = samples, dict(thresholds or {})
        self.warnings: list[str] = []  # the symptoms warned about, for metrics.json
        self._warned: set[str] = set()
        self._before: Optional[dict[str, torch.Tensor]] = None  # weights before the recorded optimizer step
        self._row: dict[str, Any] = {}
        self._records: list[dict[str, Any]] = []  # the run's records (a resumed run's earlier ones too): warnings
        self._histogram_epoch = -1
        self._path: Optional[Path] = None
        self._written = 0  # records in diagnostics.jsonl, earlier processes of a resumed run included
        self._resumed_at: Optional[int] = None  # the records of the checkpoint a resumed run continues from
        # the activation layers' outputs for the first `samples` validation samples of the epoch, while hooked
        self._outputs: dict[str, list[torch.Tensor]] = {}
        self._kinds: dict[str, str] = {}
        self._hooks: list = []
        self._seen = 0

    # --- what is watched -----------------------------------------------------------------------------

    @staticmethod
    def weights(module: L.LightningModule) -> dict[str, nn.Parameter]:
        """The network's weight matrices and kernels (dim > 1) by layer name, in network order."""
        return {name.removesuffix(".weight"): p for name, p in module.net.named_parameters()
                if p.dim() > 1 and p.requires_grad}

    @staticmethod
    def activations(module: L.LightningModule) -> dict[str, tuple[nn.Module, str]]:
        return {name: (m, ACTIVATIONS[type(m)]) for name, m in module.net.named_modules() if type(m) in ACTIVATIONS}

    def _keep(self, record: dict[str, Any]) -> None:
        """Append a record to diagnostics.jsonl (flushed: a run killed later keeps it) and to the run's records."""
        self._records.append(record)
        if self._path is None:
            return
        with naming(self._path), self._path.open("a") as file:
            file.write(json.dumps(strict(record), allow_nan=False) + "\n")
        self._written += 1

    def _log(self, trainer: L.Trainer, values: dict[str, float], step: int) -> None:
        if trainer.logger is not None:
            trainer.logger.log_metrics({k: v for k, v in values.items() if math.isfinite(v)}, step=step)

    def _histogram(self, trainer: L.Trainer, tag: str, values: torch.Tensor, step: Optional[int] = None) -> None:
        values = values.detach().flatten()
        values = values[:: max(1, values.numel() // HISTOGRAM_VALUES)]  # evenly spaced: the shape, at a fixed cost
        if isinstance(trainer.logger, TensorBoardLogger) and values.numel() and torch.isfinite(values).all():
            trainer.logger.experiment.add_histogram(tag, values.float().cpu(),
                                                    trainer.global_step if step is None else step, bins=HISTOGRAM_BINS)

    # --- hooks ---------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run continues from, saved in each checkpoint: how many records the run had written by then
        (those after it are dropped on resume, since the resumed run records them again) and the symptoms it
        warned about (warned once per run, listed in metrics.json)."""
        return {"records": self._written, "warnings": list(self.warnings), "warned": sorted(self._warned)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed_at = int(state_dict.get("records", 0))
        self.warnings = list(state_dict.get("warnings", []))
        self._warned = set(state_dict.get("warned", []))

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """diagnostics.jsonl: its header, then (resumed) the records written up to the checkpoint the run continues
        from, replaced in one step (dlopt.atomic)."""
        if not trainer.is_global_zero:
            return
        self._path = Path(trainer.default_root_dir) / FILE
        history = getattr(module, "history", None) or []  # restored from the checkpoint when resumed
        header, self._records = self._earlier(history)
        if header is None:
            header = {"kind": "layers", "weights": list(self.weights(module)),
                      "activations": {name: kind for name, (_, kind) in self.activations(module).items()},
                      "classes": getattr(trainer.datamodule, "num_classes", None), "every_n_steps": self.every_n_steps,
                      "from_epoch": history[-1]["epoch"] + 1 if history else 1}  # > 1: recording began at a resume
        self._written = len(self._records)
        text = "".join(json.dumps(strict(r), allow_nan=False) + "\n" for r in [header, *self._records])
        with replacing(self._path) as file:
            file.write(text.encode())

    def _earlier(self, history: list[dict[str, Any]]) -> tuple[Optional[dict], list[dict[str, Any]]]:
        """The header and records a resumed run keeps: the first `records` of its checkpoint's state (a checkpoint
        of an older dlopt has none: the records of the epochs its history holds). (None, []) for a new run."""
        if not history or not self._path.is_file():
            return None, []
        lines = self._path.read_text(errors="replace").splitlines()
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:  # cut short by the kill
                break
        header = next((r for r in records if r.get("kind") == "layers"), None)
        records = [r for r in records if r.get("kind") != "layers"]
        if self._resumed_at is not None:
            return header, records[:self._resumed_at]
        return header, [r for r in records if r.get("epoch", 0) <= history[-1]["epoch"]]

    def on_before_optimizer_step(self, trainer: L.Trainer, module: L.LightningModule, optimizer) -> None:
        if self._path is None or trainer.global_step % self.every_n_steps or getattr(module, "reevaluating", False):
            return  # (an optimizer that evaluates its closure again within the step, LBFGS: its first evaluation)
        weights = self.weights(module)
        grads = {name: p.grad for name, p in weights.items() if p.grad is not None}
        grad_norm = {name: float(g.norm()) for name, g in grads.items()}
        self._row = {"kind": "step", "epoch": trainer.current_epoch + 1, "step": trainer.global_step,
                     "grad_norm": grad_norm,
                     "weight_norm": {name: float(p.detach().norm()) for name, p in weights.items()},
                     "total_grad_norm": math.sqrt(sum(v * v for v in grad_norm.values()))}
        first_adaptive = trainer.global_step == 0 and isinstance(getattr(optimizer, "optimizer", optimizer), ADAPTIVE)
        self._before = None if first_adaptive else {name: p.detach().clone() for name, p in weights.items()}
        if self._histograms_due(trainer):
            for name, g in grads.items():
                self._histogram(trainer, f"diagnostics/grad/{name}", g)
            if self.weight_histograms:
                for name, p in weights.items():
                    self._histogram(trainer, f"diagnostics/weight/{name}", p)

    def _histograms_due(self, trainer: L.Trainer) -> bool:
        if self.histograms == "step":
            return True
        if self.histograms == "epoch" and self._histogram_epoch != trainer.current_epoch \
                and self._histogram_epoch_due(trainer):
            self._histogram_epoch = trainer.current_epoch
            return True
        return False

    def _histogram_epoch_due(self, trainer: L.Trainer) -> bool:
        """histograms=epoch: every `every_n_epochs` epochs (epoch 0 too) and the last; histograms take most of
        the recording's time (TensorBoard's writer thread shares the interpreter with training)."""
        return trainer.current_epoch % self.every_n_epochs == 0 or trainer.current_epoch == trainer.max_epochs - 1

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if not self._row or trainer.global_step == self._row["step"]:  # nothing recorded, or no optimizer step yet
            return
        weights = self.weights(module)
        self._row["update_ratio"] = {name: float((weights[name].detach() - before).norm() / (before.norm() + 1e-12))
                                     for name, before in (self._before or {}).items() if name in weights}
        loss = getattr(module, "step_loss", None)  # the loss before the update, also when the closure ran again
        if loss is None:
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self._row["loss"] = float(loss) if loss is not None else None
        self._before = None
        row, self._row = self._row, {}
        self._keep(row)
        first, last = next(iter(row["grad_norm"].values()), None), next(reversed(row["grad_norm"].values()), None)
        self._log(trainer, {"diagnostics/total_grad_norm": row["total_grad_norm"],
                            # nan (not logged) when step 0 of an adaptive optimizer recorded no update ratio
                            "diagnostics/update_ratio_median": symptoms.median(row["update_ratio"].values()),
                            **({"diagnostics/grad_ratio_first_last": first / last} if first and last else {})},
                  row["step"])

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """Hooks on the activation layers that keep their outputs for the first `samples` validation samples:
        the same samples every epoch (the validation split is not shuffled), measured in the forward pass that
        validation runs anyway."""
        if self._path is None or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        layers = self.activations(module)
        self._kinds = {name: kind for name, (_, kind) in layers.items()}
        self._outputs = {name: [] for name in layers}
        self._hooks = [layer.register_forward_hook(lambda m, i, out, name=name: self._outputs[name].append(out))
                       for name, (layer, _) in layers.items()]
        self._seen = 0

    def on_validation_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if self._hooks:
            self._seen += len(batch[0])
            if self._seen >= self.samples:
                self._unhook()

    def _unhook(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._unhook()
        captured, kinds, self._outputs = self._outputs, self._kinds, {}
        if not captured or not all(captured.values()):
            return
        row: dict[str, Any] = {"kind": "activations", "epoch": trainer.current_epoch + 1, "step": trainer.global_step,
                               "dead": {}, "saturated": {}, "mean": {}, "std": {}}
        for name, chunks in captured.items():
            out = torch.cat(chunks)[: self.samples].float()
            if kinds[name] in symptoms.SATURATING:
                centred = out if kinds[name] == "tanh" else 2 * out - 1
                row["saturated"][name] = float((centred.abs() > SATURATION).float().mean())
            else:  # a unit (one output of one position) that was positive for no sample of the batch
                row["dead"][name] = float((out <= 0).all(dim=0).float().mean())
            row["mean"][name], row["std"][name] = float(out.mean()), float(out.std())
            if self.histograms == "step" or self.histograms == "epoch" and self._histogram_epoch_due(trainer):
                self._histogram(trainer, f"diagnostics/activation/{name}", out, _epoch_step(trainer))
        self._keep(row)
        self._log(trainer, {**{f"diagnostics/dead/{k}": v for k, v in row["dead"].items()},
                            **{f"diagnostics/saturated/{k}": v for k, v in row["saturated"].items()}},
                  _epoch_step(trainer))
        self._warn()

    def _warn(self) -> None:
        """One warning the first time each symptom shows in the records so far."""
        summaries = symptoms.per_epoch(self._records)
        for finding in symptoms.layer_findings(summaries, self.thresholds, persistent=False):
            if finding.symptom not in self._warned:
                self._warned.add(finding.symptom)
                text = f"{finding.title}: {finding.evidence}"
                self.warnings.append(text)
                log.warning("%s", text)

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._plot()

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self._plot()

    def _plot(self) -> None:
        if self._path is not None and self._path.is_file():
            try:
                plot_diagnostics(symptoms.read_records(self._path), self._path.with_name("diagnostics.png"))
            except OSError as err:  # a full disk: the records are on disk, the picture is not essential
                log.warning("diagnostics.png not written: %s", err)


def _epoch_step(trainer: L.Trainer) -> int:
    """The TensorBoard step of what an epoch's validation measured: its last optimizer step, where Lightning logs the
    epoch's metrics (val/loss). A resume from that epoch's checkpoint then keeps it: TensorBoard hides the steps from
    the checkpoint's global_step on (purge_step), which the resumed run logs again."""
    return max(trainer.global_step - 1, 0)
