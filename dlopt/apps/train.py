"""`dlopt train`: compose the config, train, test, write the run folder; returns the monitored metric."""

from pathlib import Path

from omegaconf import DictConfig

from dlopt.apps import app, task


@task
def train(cfg: DictConfig, run_dir: Path) -> float:
    from dlopt.checks import check

    check(cfg)
    from dlopt.training.run import train as run_training  # heavy imports (torch, Lightning) only now

    return run_training(cfg, run_dir)


main = app("train", train)
