"""`dlopt train`: compose the config, train, test, write the run folder; returns the monitored metric.
`dlopt train resume=RUN_DIR` continues a run (see dlopt/apps/resume.py)."""

import contextlib
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from dlopt import folders, threads
from dlopt.apps import app, log, task, trusted_targets
from dlopt.apps import resume as resuming
from dlopt.errors import SweepError
from dlopt.training.nodes import check_nodes

# Lightning issue 11300, Hydra issue 2070
DDP_IN_SWEEP = ("trainer.devices={devices} would start more processes by running the command again, and inside a "
                "sweep (-m) each would run the whole sweep; sweep with trainer.devices=1 (trials side by side: "
                "hydra/launcher=joblib), or on SLURM give each trial its own tasks (hydra/launcher=submitit_slurm "
                "trainer=slurm); see README, Several devices")


@task
def train(cfg: DictConfig, run_dir: Path) -> float:
    from dlopt.checks import validate

    hydra = HydraConfig.get()
    overrides, resumed = list(hydra.overrides.task), None
    with resuming.log_untouched(run_dir) if cfg.get("resume") else contextlib.nullcontext():
        if cfg.get("resume"):
            given = [o for o in overrides if not o.startswith("resume=")]
            resumed = resuming.resumed_config(cfg, run_dir, given, trusted_targets(cfg))
            cfg, overrides = resumed.config, resumed.earlier + given
        validate(cfg, "train", set_by_user=list(hparams(cfg, overrides)), data=hydra.runtime.choices.get("data"))
    in_sweep = hydra.mode == RunMode.MULTIRUN
    check_nodes(cfg.trainer, in_sweep, own_folder=folders.claimed(run_dir))
    for note in resumed.notes if resumed else []:
        log.info("%s", note)
    threads.use(cfg.threads)  # imports torch
    from dlopt.training.processes import NoRelaunch  # heavy imports (torch, Lightning) only now
    from dlopt.training.run import train as run_training

    marks = [NoRelaunch(SweepError(DDP_IN_SWEEP.format(devices=cfg.trainer.get("devices"))))] if in_sweep else []
    if resumed is not None:
        from dlopt.training.resumes import Resumed

        marks.append(Resumed(run_dir, resumed.overrides, resumed.changed))
    if (cfg.get("search") or {}).get("trial") is not None:  # a trial of search=...: report to its pruner
        from dlopt.search import study
        from dlopt.search.pruning import Pruning

        url = study.storage_url(cfg.search, hydra.sweep.dir)
        trial = study.trial(cfg.search, url, cfg.trainer.max_epochs)
        marks.append(Pruning(trial, cfg.monitor))
        beating = study.heartbeats(trial)  # while it trains, on a storage that keeps them (search.heartbeat)
    else:
        beating = contextlib.nullcontext()
    last = run_dir / "checkpoints" / "last.ckpt" if resumed is not None else None
    from dlopt.training.crossval import cross_validate, folds

    with beating:
        if folds(cfg):  # data.cv=K: K runs in run_dir/folds
            return cross_validate(cfg, run_dir, callbacks=marks, hparams=hparams(cfg, overrides))
        return run_training(cfg, run_dir, callbacks=marks, resume=last, hparams=hparams(cfg, overrides))


def hparams(cfg: DictConfig, overrides) -> dict:
    """What the command line set, for TensorBoard's HPARAMS view: key -> value (a group -> its option)."""
    from omegaconf import OmegaConf

    values = {}
    for override in overrides:
        key, _, text = override.lstrip("+~").partition("=")
        if key.split(".")[0] in ("search", "resume", "resume_changes", "hydra"):
            continue
        value = OmegaConf.select(cfg, key, default=None)
        values[key] = value if isinstance(value, (int, float, str, bool)) else text
    return values


main = app("train", train)
