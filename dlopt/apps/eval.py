"""`dlopt eval run=RUN_DIR | ckpt_path=FILE`: test metrics of a trained run, rebuilt from its own config."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from dlopt.apps import config_dir, task


@task
def evaluate(cfg: DictConfig, run_dir: Path) -> dict:
    from dlopt.training.run import evaluate as run_evaluation

    return run_evaluation(cfg, run_dir)


main = hydra.main(version_base=None, config_path=config_dir(), config_name="eval")(evaluate)
