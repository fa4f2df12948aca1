"""`dlopt train`: compose the config, train, test, write the run folder; returns the monitored metric."""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from dlopt.apps import app, task
from dlopt.errors import SweepError

# Lightning issue 11300, Hydra issue 2070
DDP_IN_SWEEP = ("trainer.devices={devices} would start more processes by running the command again, and inside a "
                "sweep (-m) each would run the whole sweep; sweep with trainer.devices=1 (trials side by side: "
                "hydra/launcher=joblib), or on SLURM give each trial its own tasks (hydra/launcher=submitit_slurm "
                "trainer=slurm); see README, Several devices")


@task
def train(cfg: DictConfig, run_dir: Path) -> float:
    from dlopt.checks import check

    check(cfg)
    from dlopt.training.processes import NoRelaunch  # heavy imports (torch, Lightning) only now
    from dlopt.training.run import train as run_training

    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    marks = [NoRelaunch(SweepError(DDP_IN_SWEEP.format(devices=cfg.trainer.get("devices"))))] if in_sweep else []
    return run_training(cfg, run_dir, callbacks=marks)


main = app("train", train)
