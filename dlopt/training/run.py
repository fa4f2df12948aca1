"""Build a run from its config and train or evaluate it: DataModule -> model -> LightningModule -> Trainer.

Everything here receives plain config objects and a run folder; nothing reaches back to the CLI
or to Hydra's global state, so tests and other tools can call `train` directly.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import socket
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning.pytorch as L
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.model_summary import ModelSummary
from omegaconf import DictConfig, OmegaConf

from dlopt.data.augment import build_augment, keeping_labels
from dlopt.data.datamodule import DataModule
from dlopt.checks import check_arguments
from dlopt.errors import UserError, cause_of, did_you_mean, os_error_message
from dlopt.models.weights import describe_mismatches, mismatches
from dlopt.saved_run import SavedEnsemble, SavedRun, checkpoint_config, read_checkpoint
from dlopt.training import report
from dlopt.training.checkpoint_io import AtomicCheckpointIO
from dlopt.terminal import FILE_ONLY, interactive
from dlopt.training.module import Classifier, Diverged, RunContext
from dlopt.training.processes import NoRelaunch, check_accelerator, check_processes
from dlopt.training.transfer import load as load_transfer

log = logging.getLogger(__name__)
logging.getLogger("lightning").handlers.clear()  # Hydra's root handlers already print and file its messages
# metrics are logged once per epoch, so Lightning's hint about short epochs does not apply
warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")  # Lightning 2.6 on torch 2.14
# epoch metrics are torchmetrics results, already synced across processes (DDP) when computed
warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda record: "Tip:" not in record.getMessage())
# trainer.overfit_batches: dlopt's in-memory batches stop shuffling themselves (DataModule.overfitting)
warnings.filterwarnings("ignore", message=".*requested to overfit but enabled .* shuffling.*")


def build(cfg: DictConfig, data: Optional[DataModule] = None, set_by_user: Sequence[str] = (),
          context: Optional[RunContext] = None) -> tuple[DataModule, Classifier]:
    """The DataModule and the LightningModule the config describes (fresh weights); `data`
    replaces the configured data (a DataModule of one's own, a benchmark's reference). `set_by_user`: the keys
    the command line set (augmentation.hflip_p): a transform the data declares label-changing is refused when
    the user set it, skipped when a preset did (keeping_labels). `context`: what the module knows of the run that
    trains it (dlopt.training.module.RunContext)."""
    for key in ("data", "model", "optimizer", "scheduler"):
        if cfg.get(key):
            check_arguments(cfg[key], key)
    data = data if data is not None else _data(cfg)
    knobs = keeping_labels(OmegaConf.to_container(cfg.augmentation, resolve=True), cfg.data.get("label_changing") or (),
                           [k.partition(".")[2] for k in set_by_user if k.startswith("augmentation.")], data.name)
    data.augment = build_augment(data.in_shape, data.num_classes, data.scale, **knobs)
    torch.manual_seed(cfg.seed)  # weights depend on the seed only, not on how the data was made
    make_net = instantiate(cfg.model, _convert_="all")
    make_net.keywords.pop("compile", None)  # a run option (see train), not an argument of the net
    net = make_net(in_shape=data.in_shape, num_classes=data.num_classes)
    scheduler = instantiate(cfg.scheduler, _convert_="all") if cfg.get("scheduler") else None
    warmup_epochs = scheduler.keywords.pop("warmup_epochs", 0) if scheduler is not None else 0  # see Classifier
    reg, clip = cfg.regularization, cfg.get("clip") or {}
    transfer = load_transfer(cfg, net)  # transfer.from: the network of an earlier run, and how it trains
    module = Classifier(
        net,
        instantiate(cfg.optimizer, _convert_="all"),
        scheduler,
        num_classes=data.num_classes,
        input_shift=data.shift,
        input_scale=data.scale,
        class_weights=data.class_weights,
        weight_decay=reg.weight_decay,
        exclude_norm_bias=reg.get("exclude_norm_bias", False),
        l1=reg.l1,
        label_smoothing=reg.get("label_smoothing", 0.0),  # dropout is a model knob: model.dropout
        monitor=cfg.monitor,
        clip_factor=clip.get("factor"),
        clip_eps=clip.get("eps", 1e-3),
        warmup_epochs=warmup_epochs,
        config={**OmegaConf.to_container(cfg, resolve=True), "augmentation": knobs},  # as built
        transfer=transfer,
        context=context,
    )
    data.full_batch = full_batch(cfg)
    return data, module


def full_batch(cfg: DictConfig) -> bool:
    """Whether the optimizer takes the whole training split as one batch each step: L-BFGS (optimizer=lbfgs), whose
    line search needs the same loss at every evaluation of a step."""
    from hydra.utils import get_object

    target = (cfg.get("optimizer") or {}).get("_target_")
    made = get_object(str(target)) if target else None
    return isinstance(made, type) and issubclass(made, torch.optim.LBFGS)


SMALL_TEST = 100  # a test split under this many samples moves its accuracy in steps of more than a point


def _hint_cv(cfg: DictConfig, data: DataModule) -> None:
    """One line for a test split too small to rank two configs, when the data offers cross-validation (data.cv)."""
    if "cv" not in cfg.data or cfg.data.cv is not None or not hasattr(data, "splits"):
        return
    tested = len(data.splits["test"][1])
    if 0 < tested < SMALL_TEST:
        log.info("the test split holds %d samples (one sample is %.1f points of accuracy): to compare configs on data "
                 "this small, data.cv=5 tests every sample once (5 runs)", tested, 100 / tested)


def _log_batching(data: DataModule) -> tuple[int, int]:
    """Say how the training split is batched when it is not the usual one pass of data.batch_size; returns (batches,
    passes) of an epoch in one process."""
    count = len(data.train_index) if data.train_index is not None else data.train_count
    size, passes = data.train_batching(count)
    batches = math.ceil(count * passes / size)
    if data.full_batch:
        log.info("optimizer=lbfgs: every step takes the whole training split (%d samples) as one batch", count)
    elif passes > 1:
        log.info("data.min_batches=%d: the %d training samples make %d batch%s of %d, so each epoch passes over them "
                 "%d times (%d batches)", data.min_batches, count, math.ceil(count / size),
                 "es" if math.ceil(count / size) > 1 else "", size, passes, batches)
    return batches, passes


RESAMPLING = ("bootstrap", "sample_weights", "fold")  # data keys the run applies to the built DataModule (resample)
OWN_DATA_KEYS = (*RESAMPLING, "label_changing")  # data keys the run reads itself, not passed to the data source


def _data(cfg: DictConfig) -> DataModule:
    """The configured DataModule: a key that neither the data source nor its DataModule takes (the source's
    `**loader: Unpack[Loader]`) is one line naming it (check_arguments)."""
    check_arguments(cfg.data, "data")  # the run's own data keys (OWN_DATA_KEYS) are among checks.targets.OWN_KEYS
    node = OmegaConf.masked_copy(cfg.data, [k for k in cfg.data if k not in OWN_DATA_KEYS])
    return instantiate(node, seed=cfg.seed, _convert_="all")


class _Net(L.LightningModule):
    """Only the network, with one sample as example input: what Lightning's ModelSummary needs
    to count FLOPs per layer (torch.utils.flop_counter) without the metric modules in the table."""

    def __init__(self, net: torch.nn.Module, in_shape: tuple[int, ...]):
        super().__init__()
        self.net, self.example_input_array = net, torch.zeros(1, *in_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def summarize(net: torch.nn.Module, in_shape: tuple[int, ...], depth: int = 3, file_only: bool = False) -> ModelSummary:
    """Log the layer table (parameters, FLOPs per sample, shapes) and return the summary; `file_only`: to the run's
    log file, not the terminal (a sweep's runs: one table per run would drown its results)."""
    summary = ModelSummary(_Net(net, in_shape), max_depth=depth)
    log.info("model: %s parameters, %s FLOPs per sample\n%s", f"{summary.total_parameters:,}",
             f"{summary.total_flops:,}", summary, extra=FILE_ONLY if file_only else None)
    return summary


def preview_augmentation(data, run_dir: Path, logger, n: int = 8, draws: int = 3) -> None:
    """augmentations.png, also a TensorBoard figure: n training samples and `draws` augmented versions.

    Drawn on a forked RNG, so that looking at the augmentation does not change the training."""
    x, y = data.train_samples(n)
    rows = [("original", x, [data.classes[int(i)] for i in y])]
    if data.augment is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for draw in range(draws):
                xa, ya = data.augment(x.clone(), y.clone())
                if ya.is_floating_point():  # mixed labels: the largest share
                    share, top = ya.max(1)
                    captions = [f"{data.classes[int(t)]} {float(s):.0%}" for s, t in zip(share, top)]
                else:
                    captions = [data.classes[int(i)] for i in ya]
                rows.append((f"augmented {draw + 1}", xa, captions))
    title = "training samples and their augmentation" if data.augment is not None else "training samples (augmentation: none)"
    if x.dim() == 2 and data.shift is not None:  # a table's features on one scale: as the network sees them
        rows = [(name, (batch - data.shift) / data.scale, captions) for name, batch, captions in rows]
        title += ", features normalized"
    fig = report.plot_samples(rows, title, names=data.feature_names)
    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_figure("augmentations", fig, close=False)
    report.save_figure(fig, run_dir / "augmentations.png")


def _trainer(cfg: DictConfig, run_dir: Path, callbacks: Sequence[L.Callback] = (), purge_step: Optional[int] = None) -> L.Trainer:
    """The configured Trainer, its callbacks writing into run_dir. `purge_step` (when resuming) hides
    the TensorBoard events an interrupted run wrote after its last checkpoint."""
    for key in ("trainer", "callbacks", "logger"):
        if cfg.get(key):
            check_arguments(cfg[key], key)
    check_accelerator(cfg.trainer.get("accelerator"))
    checkpoints = run_dir / "checkpoints"
    if checkpoints.exists() and not checkpoints.is_dir():  # fail now, not when the first epoch is saved
        raise FileExistsError(errno.EEXIST, "a file is in the way", str(checkpoints))
    callbacks = list(callbacks)
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:  # callbacks.early_stopping=null switches one off
            continue
        is_checkpoint = str(node.get("_target_", "")).endswith("ModelCheckpoint")
        extra = {"dirpath": str(run_dir / "checkpoints")} if is_checkpoint else {}
        callbacks.append(instantiate(node, **extra))
    bar = no_bar_off_terminal(cfg)
    if bar:
        callbacks = [callback for callback in callbacks if not isinstance(callback, ProgressBar)]
    extra = {"purge_step": purge_step} if purge_step is not None and "TensorBoard" in cfg.logger.get("_target_", "") else {}
    logger = instantiate(cfg.logger, save_dir=str(run_dir), **extra) if cfg.get("logger") else False
    try:
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=str(run_dir),
                              plugins=[AtomicCheckpointIO()], **bar)
    except InstantiationException as err:  # a strategy name Lightning does not know (its other refusals:
        refused = cause_of(err, ValueError)  # MisconfigurationException, see lightning_config_errors)
        if refused is None:
            raise
        text = " ".join(str(refused).split())
        key = next((f"trainer.{k}={cfg.trainer[k]}" for k in cfg.trainer if f"{k}=" in text), "trainer")
        raise UserError(f"{key}: Lightning refuses it: {text}") from None
    check_processes(trainer)
    asked = str(cfg.trainer.get("precision"))
    if asked not in ("None", trainer.precision):  # Lightning's own warning goes to the log file, as every library's
        log.warning("trainer.precision=%s runs as precision=%s on this machine (Lightning's choice, e.g. a CPU has no "
                    "float16 autocast; the log file has its reason)", asked, trainer.precision)
    return trainer


def no_bar_off_terminal(cfg: DictConfig) -> dict[str, bool]:
    """The Trainer's enable_progress_bar=False when the config asks for a progress bar (trainer.enable_progress_bar,
    callbacks.progress_bar) but stdout is not a terminal (dlopt.terminal.interactive): in CI, a pipe or a file a bar
    is a stream of fragments, and the run's one log line per epoch (dlopt.training.module) takes its place. {} (the
    config's own settings) otherwise. The config is left as given: it says what to show where a terminal is."""
    return {"enable_progress_bar": False} if cfg.trainer.get("enable_progress_bar") is not False \
        and not interactive() else {}


@contextmanager
def lightning_config_errors():
    """Lightning's MisconfigurationException is a user's config mistake (also when Hydra's
    instantiate wrapped it): report it as one."""
    try:
        yield
    except Exception as err:
        cause = cause_of(err, MisconfigurationException)
        if cause is None:
            raise
        raise UserError("Lightning: " + " ".join(str(cause).split())) from None


def train(cfg: DictConfig, run_dir: Path, callbacks: Sequence[L.Callback] = (), data: Optional[DataModule] = None,
          resume: Optional[Path] = None, hparams: Optional[dict[str, Any]] = None,
          sweep: Optional[bool] = None) -> float:
    """Train, test the best checkpoint, write metrics.json, predictions.npz and curves.png; return the best monitored
    value. In three steps: set up (trainer, data, module), fit (why it stopped), finish (test, metrics, files).

    `callbacks` are added to the ones the config declares (a sweeper's pruning callback, a timer);
    `data` replaces the configured DataModule; `resume` is a last.ckpt of this run to continue from;
    `hparams` (what this run set, e.g. its overrides) go to TensorBoard's HPARAMS view with the results, and
    tell a user's augmentation knob from a preset's (build's `set_by_user`);
    `sweep`: the run is one of a sweep's (default: it carries the NoRelaunch mark dlopt train gives a sweep's runs),
    so its layer table goes to its log file only.

    Epochs are numbered from 1 in everything written here (history.json, metrics.json, the log, curves.png)."""
    started_at = time.perf_counter()
    if sweep is None:
        sweep = any(isinstance(callback, NoRelaunch) for callback in callbacks)
    run = set_up(cfg, run_dir, callbacks, data, resume, list(hparams or {}),
                 RunContext(started_at=started_at, epoch_lines_to_file=sweep))
    stopped = fit(cfg, run, resume)
    return finish(cfg, run_dir, run, stopped, hparams)["objective"]


@dataclass
class Setup:
    """What a run trains with, as `set_up` built it, and what its metrics.json reports of it."""

    trainer: L.Trainer
    data: DataModule
    module: Classifier
    recorder: Optional[L.Callback]  # the diagnostics group's (its warnings go to metrics.json)
    passes: int  # passes over the training split per epoch (data.min_batches)
    size: ModelSummary  # parameters and FLOPs per sample


def set_up(cfg: DictConfig, run_dir: Path, callbacks: Sequence[L.Callback], data: Optional[DataModule],
           resume: Optional[Path], set_by_user: Sequence[str], context: RunContext) -> Setup:
    """The run's trainer (the config's callbacks, `callbacks` and the diagnostics' recorder), data and module, told what
    the run is (`context`: when it started, a sweep's or not; history.json is written by rank 0 only). Settings torch
    refuses are told here, before anything is written; a new run's augmentation preview is written last."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    resume_step = read_checkpoint(resume, f"resume={run_dir}")["global_step"] if resume else None
    recorder = _recorder(cfg)
    with lightning_config_errors():  # devices and accelerator are checked before anything is built
        trainer = _trainer(cfg, run_dir, [*callbacks, *([recorder] if recorder else [])], purge_step=resume_step)
    if trainer.is_global_zero:  # with several processes (DDP), rank 0 writes the run's files
        context = replace(context, history_file=run_dir / "history.json")
    data, module = build(cfg, data, set_by_user, context)
    data.resample(cfg.seed, cfg.data.get("split_seed", cfg.seed),
                  **{k: cfg.data.get(k) for k in RESAMPLING if cfg.data.get(k) is not None})
    _, passes = _log_batching(data)
    _hint_cv(cfg, data)
    module.configure_optimizers()  # settings torch.optim refuses are told now, before anything is written
    size = summarize(module.net, data.in_shape, file_only=context.epoch_lines_to_file)
    if trainer.overfit_batches:
        log.info("trainer.overfit_batches=%s: every epoch trains on the same first training batches, unshuffled and "
                 "unaugmented", trainer.overfit_batches)
    if cfg.model.get("compile"):
        module.net.compile()  # in place: the state_dict keys (and so the checkpoints) stay those of the plain net
    with lightning_config_errors():
        if resume is not None:
            log.info("resuming %s from %s (step %d)", run_dir, resume, resume_step)
        elif trainer.is_global_zero:
            preview_augmentation(data, run_dir, trainer.logger)
    return Setup(trainer, data, module, recorder, passes, size)


def fit(cfg: DictConfig, run: Setup, resume: Optional[Path]) -> Optional[tuple[int, str]]:
    """trainer.fit (from `resume`, a last.ckpt, when given); returns the epoch (from 1) at which and the reason why
    training stopped before max_epochs, or None.

    A non-finite loss stops the run like early stopping does when the early stopping callback has
    check_finite (its default) and a best epoch exists to test; otherwise it fails the run."""
    with lightning_config_errors(), _writer_thread_errors_as_warnings(), _own_checkpoints(resume):
        try:
            run.trainer.fit(run.module, datamodule=run.data, ckpt_path=resume)
        except Exception as err:
            stopped = _stopped_by_failure(err, run.trainer, "monitor" if _follows_monitor(cfg) else
                                          "callbacks.early_stopping.monitor")
            if stopped is None:
                raise
            return stopped
    return _stopped_early(run.trainer)


def finish(cfg: DictConfig, run_dir: Path, run: Setup, stopped: Optional[tuple[int, str]],
           hparams: Optional[dict[str, Any]]) -> dict[str, Any]:
    """Test the best epoch's weights, write metrics.json, predictions.npz and curves.png (rank 0); return the
    metrics."""
    history = list(run.module.history)
    best = _best_row(history, cfg.monitor, cfg.mode)
    if best is None:
        logged = sorted(k for k in (history[-1] if history else {}) if "/" in k)
        raise UserError(f"monitor={cfg.monitor} was never logged; choose one of: {', '.join(logged)}")
    tested, tested_epoch = _test(run, best, history)
    metrics = {**_results(cfg, run, history, best, tested), **_stop(cfg, run.trainer, stopped), **_facts(cfg, run)}
    if run.trainer.is_global_zero:
        _log_hparams(run.trainer.logger, hparams, metrics)
        report.plot_curves(history, run_dir / "curves.png", best=best["epoch"], monitor=cfg.monitor,
                           tested=tested, tested_epoch=tested_epoch)
        report.write_npz(_run_predictions(run.module, run.data), run_dir / "predictions.npz")
        report.write_json(metrics, run_dir / "metrics.json")
    log.info("%s: best epoch %d of %d: %s=%.4f; test/acc=%.4f%s -> %s", run_dir.name, metrics["best_epoch"],
             metrics["epochs"], cfg.monitor, metrics["objective"], metrics.get("test/acc", float("nan")),
             " (a fast_dev_run: no measurement)" if run.trainer.fast_dev_run else "", run_dir)
    return metrics


def _test(run: Setup, best: dict, history: list[dict]) -> tuple[dict[str, float], Optional[int]]:
    """Test the best checkpoint's weights (the final weights with callbacks.checkpoint=null): the test metrics and
    the epoch tested."""
    checkpoint, module = run.trainer.checkpoint_callback, run.module
    tested_epoch = history[-1]["epoch"] if history else None
    if checkpoint is not None and checkpoint.best_model_path:
        tested_epoch = best["epoch"]
        # its state_dict, as `dlopt eval` loads it (with weight averaging: the averaged weights, which
        # validation saw; Trainer.test(ckpt_path=...) would restore the raw weights saved beside them)
        saved = torch.load(checkpoint.best_model_path, map_location=module.device, weights_only=True)
        module.load_state_dict(saved["state_dict"])
    with lightning_config_errors():
        tested = run.trainer.test(module, datamodule=run.data, verbose=False)[0]
    return {k: float(v) for k, v in tested.items()}, tested_epoch


def _results(cfg: DictConfig, run: Setup, history: list[dict], best: dict, tested: dict[str, float]) -> dict[str, Any]:
    """metrics.json's numbers: the last epoch's, the test's, the best epoch's, and the steps training took."""
    final = history[-1] if history else {}
    return {
        **{k: v for k, v in final.items() if k not in ("epoch", "lr")},
        **tested,
        "monitor": cfg.monitor,
        "mode": cfg.mode,
        "objective": best[cfg.monitor],
        "best_epoch": best["epoch"],
        "epochs": len(history),
        "steps": run.trainer.global_step,  # optimizer steps, over all epochs
        "batches_per_epoch": run.trainer.num_training_batches,
        "passes_per_epoch": run.passes,  # data.min_batches: passes over the training split per epoch
    }


def _stop(cfg: DictConfig, trainer: L.Trainer, stopped: Optional[tuple[int, str]]) -> dict[str, Any]:
    """metrics.json's account of how training ended: early (stopping, pruning, divergence), at max_epochs, or as a
    dev run."""
    return {
        "stopped_early": stopped is not None,
        "pruned": any(getattr(callback, "pruned", False) for callback in trainer.callbacks),
        "stopped_epoch": stopped[0] if stopped else None,
        "stop_reason": stopped[1] if stopped else _dev_run(cfg, trainer) or
        f"trainer.max_epochs={cfg.trainer.max_epochs} reached",
        **({"dev_run": f"trainer.fast_dev_run={_setting(cfg.trainer.get('fast_dev_run'))}"}
           if trainer.fast_dev_run else {}),
        **({"overfit_batches": trainer.overfit_batches} if trainer.overfit_batches else {}),
    }


def _facts(cfg: DictConfig, run: Setup) -> dict[str, Any]:
    """metrics.json's facts of the run: its data, network, seed, machine, transfer and wall time."""
    module = run.module
    return {
        "classes": run.data.num_classes,
        "warnings": run.recorder.warnings if run.recorder else [],
        "params": run.size.total_parameters,
        "flops_per_sample": run.size.total_flops,
        "seed": cfg.seed,
        "threads": torch.get_num_threads(),
        "node": os.environ.get("DLOPT_NODE") or socket.gethostname(),  # the machine (on Ray: host/node id)
        **({"transfer": module.transfer.summary()} if module.transfer else {}),
        "wall_time_s": round(module.wall_time_s(), 3),  # with the earlier processes of a resumed run
        "process_wall_time_s": round(time.perf_counter() - module.context.started_at, 3),
    }


def _log_hparams(logger, hparams: Optional[dict[str, Any]], metrics: dict[str, Any]) -> None:
    """TensorBoard's HPARAMS view: what the run set, with its objective and test accuracy."""
    if hparams is not None and isinstance(logger, TensorBoardLogger):
        logger.log_hyperparams(hparams, {f"hparams/{k}": metrics[k] for k in ("objective", "test/acc")
                                         if isinstance(metrics.get(k), float)})


def _run_predictions(module: Classifier, data: DataModule) -> dict[str, Any]:
    """predictions.npz of a training run: val and test; a resampled run's whole training split too (boosting weighs
    its errors), with the held-out fold's indices."""
    splits = ("val", "test", "train") if data.train_index is not None else ("val", "test")
    held_out = {"fold_index": data.fold_index.numpy()} if data.fold_index is not None else {}
    return {**predictions(module, data, splits), **held_out}


def _dev_run(cfg: DictConfig, trainer: L.Trainer) -> Optional[str]:
    """What metrics.json says of a trainer.fast_dev_run (None for a real run): its numbers measure nothing."""
    if not trainer.fast_dev_run:
        return None
    batches = int(trainer.fast_dev_run)
    return (f"trainer.fast_dev_run={_setting(cfg.trainer.get('fast_dev_run'))}: a dev run of 1 epoch on {batches} "
            f"batch{'es' if batches > 1 else ''} of each split, without checkpoints or logger; not a measurement")


def _setting(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def predictions(module: Classifier, data: DataModule, splits: Sequence[str]) -> dict[str, Any]:
    """SPLIT_probabilities (samples x classes, float32) and SPLIT_labels of each split, in the split's order: what
    combining finished runs (ensembles) needs without loading a network."""
    arrays: dict[str, Any] = {}
    module.eval()
    with torch.no_grad():
        for split in splits:
            batches = [(torch.softmax(module(x.to(module.device)).float(), 1).cpu(), y.cpu())
                       for x, y in data.split_batches(split)]
            if batches:
                arrays[f"{split}_probabilities"] = torch.cat([p for p, _ in batches]).numpy()
                arrays[f"{split}_labels"] = torch.cat([y for _, y in batches]).numpy()
    return arrays


def _recorder(cfg: DictConfig) -> Optional[L.Callback]:
    """The diagnostics group's recorder (dlopt.diagnostics.recorder), None with diagnostics=none."""
    if not cfg.get("diagnostics"):
        return None
    check_arguments(cfg.diagnostics, "diagnostics")
    return instantiate(cfg.diagnostics, _convert_="all")


def _follows_monitor(cfg: DictConfig) -> bool:
    stopping = (cfg.get("callbacks") or {}).get("early_stopping")
    return stopping is not None and stopping.get("monitor") == cfg.monitor


def _stopped_by_failure(err: Exception, trainer: L.Trainer, key: str) -> Optional[tuple[int, str]]:
    """What an error out of trainer.fit means. A divergence that early stopping watches for (check_finite, its
    default) once a best epoch exists to test: a stop, (epoch from 1, reason). A failed write with last.ckpt kept
    (a full disk) or an early stopping monitor (named `key` in messages) that is never logged: a UserError saying
    so. None: the error stands."""
    stopping, checkpoint = trainer.early_stopping_callback, trainer.checkpoint_callback
    diverged = cause_of(err, Diverged)
    if diverged is not None and stopping is not None and stopping.check_finite \
            and checkpoint is not None and checkpoint.best_model_path:
        log.warning("stopped: %s; testing the best epoch", diverged)
        return trainer.current_epoch + 1, str(diverged)
    refused = cause_of(err, OSError)
    last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
    if refused is not None and refused.filename is None:  # a library's write that failed after its file opened
        refused = OSError(refused.errno, refused.strerror or str(refused), trainer.default_root_dir)
    if refused is not None and last.is_file():  # e.g. a full disk while saving an epoch's checkpoint
        raise UserError(f"{os_error_message(refused)}; the run's last complete checkpoint is kept: continue it "
                        f"with dlopt train resume={trainer.default_root_dir}") from None
    # EarlyStopping(strict=True) tells of its missing monitor by a RuntimeError only its text tells from others
    if diverged is None and isinstance(err, RuntimeError) and stopping is not None \
            and stopping.monitor not in trainer.callback_metrics and "Early stopping" in str(err):
        logged = sorted(trainer.callback_metrics)
        raise UserError(f"{key}={stopping.monitor} is never logged"
                        f"{did_you_mean(stopping.monitor, logged)}; choose one of {', '.join(logged)}") from None
    return None


def _stopped_early(trainer: L.Trainer) -> Optional[tuple[int, str]]:
    """The epoch (from 1) at which and the reason why a search trial's pruning or early stopping stopped training
    before max_epochs, or None."""
    for callback in trainer.callbacks:  # a search trial's pruning (dlopt/search/pruning.py): its epoch counts from 0
        if getattr(callback, "stopped", None):
            epoch, reason = callback.stopped
            log.info("stopped at epoch %d: %s", epoch + 1, reason)
            return epoch + 1, reason
    stopping = trainer.early_stopping_callback
    if stopping is None or not stopping.stopped_epoch:
        return None
    reason = (stopping.stopping_reason_message or "").replace(" Signaling Trainer to stop.", "")
    log.info("early stopping at epoch %d: %s", stopping.stopped_epoch + 1, reason)
    return stopping.stopped_epoch + 1, f"early stopping: {reason}"


@contextmanager
def _own_checkpoints(resume: Optional[Path]):
    """While it is open, a resumed run (`resume`: its last.ckpt) is not warned by Lightning that its checkpoint
    folder "exists and is not empty" (ModelCheckpoint, when fit starts): it holds the run's own checkpoints, which
    the run continues and replaces. (warnings' filters are the process's: a resume runs alone, never in a sweep's
    threads.)"""
    if resume is None:
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        yield


@contextmanager
def _writer_thread_errors_as_warnings():
    """While it is open, a thread's OSError is one warning (_writer_thread_errors), not the thread's traceback."""
    threading.excepthook, default_hook = _writer_thread_errors, threading.excepthook
    try:
        yield
    finally:
        threading.excepthook = default_hook


def _writer_thread_errors(args: threading.ExceptHookArgs) -> None:
    """TensorBoard writes its events from a thread of its own: a full disk there is the full disk the run then
    reports in one line, so it is one warning, not the thread's traceback."""
    if issubclass(args.exc_type, OSError):
        log.warning("TensorBoard could not write its events: %s", os_error_message(args.exc_value))
    else:
        threading.__excepthook__(args)


def _best_row(history: list[dict], monitor: str, mode: str) -> dict | None:
    """The epoch row with the best `monitor` value (the first of equals, as ModelCheckpoint keeps it)."""
    rows = [row for row in history if monitor in row]
    if not rows:
        return None
    return (min if mode == "min" else max)(rows, key=lambda row: row[monitor])


def rebuild(saved: SavedRun | SavedEnsemble,
            allowed: frozenset[str]) -> tuple[DictConfig, DataModule, torch.nn.Module]:
    """The config, data and trained module of a saved run, rebuilt from the config its checkpoint carries with only
    `allowed` targets (dlopt.saved_run), the checkpoint's weights loaded: what every command that starts from a
    trained network (eval, explain) builds it with. An ensemble's module is dlopt.ensemble.network.Ensemble of its
    members rebuilt so, with the data and config of its first."""
    if isinstance(saved, SavedEnsemble):
        from dlopt.ensemble.network import Ensemble
        from dlopt.ensemble.stacking import load

        built = [[rebuild(run, allowed) for run in runs] for runs in saved.members]
        run_cfg, data, _ = built[0][0]
        meta = load(saved.meta) if saved.meta is not None else None
        return run_cfg, data, Ensemble([[module for _, _, module in runs] for runs in built], saved.weights,
                                       saved.combine, meta, data.num_classes)
    path = saved.checkpoint
    checkpoint = read_checkpoint(path, saved.named)
    run_cfg = checkpoint_config(checkpoint, f"{saved.named}: the config saved in {path}", allowed)
    run_cfg.pop("transfer", None)  # the checkpoint holds the trained network; where it started is not needed
    data, module = build(run_cfg)
    problems = mismatches(checkpoint["state_dict"], module.state_dict())
    if problems:
        raise UserError(f"{saved.named}: the weights in {path} do not fit the network its saved config describes: "
                        f"{describe_mismatches(problems)}")
    module.load_state_dict(checkpoint["state_dict"])
    return run_cfg, data, module


def evaluate(saved: SavedRun, split: str, run_dir: Path, allowed: frozenset[str]) -> dict[str, float]:
    """Test (or validate) the checkpoint of a saved run with the data and model of the run that wrote
    it (`rebuild`); write metrics.json and the split's predictions.npz."""
    run_cfg, data, module = rebuild(saved, allowed)
    if isinstance(saved, SavedEnsemble):  # no LightningModule: its metrics from its predictions
        from dlopt.ensemble.scores import scores

        arrays = predictions(module, data, [split])
        found = scores(arrays[f"{split}_probabilities"].astype(np.float64), arrays[f"{split}_labels"])
        metrics = {f"{split}/{'loss' if k == 'nll' else k}": v for k, v in found.items()}
        if saved.combine == "vote":  # a vote's class shares are no probabilities
            metrics.pop(f"{split}/loss")
        report.write_npz(arrays, run_dir / "predictions.npz")
        report.write_json({**metrics, "ensemble": str(saved.folder.resolve())}, run_dir / "metrics.json")
        for name, value in sorted(metrics.items()):
            log.info("%s = %.4f", name, value)
        return metrics
    with lightning_config_errors():
        # the run's own Trainer settings (precision, limit_test_batches, ...), without its callbacks and logger,
        # in one process: DDP would pad the split to a multiple of the process count
        trainer = instantiate(run_cfg.trainer, logger=False, enable_checkpointing=False, default_root_dir=str(run_dir),
                              strategy="auto", devices=1, num_nodes=1, **no_bar_off_terminal(run_cfg))
        run = trainer.validate if split == "val" else trainer.test
        metrics = {k: float(v) for k, v in run(module, datamodule=data, verbose=False)[0].items()}
    report.write_npz(predictions(module, data, [split]), run_dir / "predictions.npz")
    report.write_json({**metrics, "checkpoint": str(saved.checkpoint.resolve())}, run_dir / "metrics.json")
    for name, value in sorted(metrics.items()):
        log.info("%s = %.4f", name, value)
    return metrics
