"""`dlopt ensemble method=bagging|boosting|stacking [train overrides]` trains an ensemble's members and combines them;
`dlopt ensemble runs=SWEEP_DIR|[RUN,...]` combines finished runs. Either is scored beside its members
(dlopt/ensemble/). The command itself imports no torch: its members train in `dlopt train` processes."""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dlopt.apps import app, task
from dlopt.checks import validate


@task
def ensemble(cfg: DictConfig, run_dir: Path) -> dict:
    validate(cfg, "ensemble")
    from dlopt.ensemble.build import ensemble as build

    hydra = HydraConfig.get()
    dirs = tuple(s.path for s in hydra.runtime.config_sources if s.provider == "command-line")
    return build(cfg, run_dir, (list(hydra.overrides.task), list(hydra.overrides.hydra)), dirs)


main = app("ensemble", ensemble)
