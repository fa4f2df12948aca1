"""`dlopt eval run=RUN_DIR | ckpt_path=FILE`: test metrics of a trained run, rebuilt from its own config."""

from pathlib import Path

from omegaconf import DictConfig

from dlopt.apps import app, task


@task
def evaluate(cfg: DictConfig, run_dir: Path) -> dict:
    from dlopt.training.run import evaluate as run_evaluation

    return run_evaluation(cfg, run_dir)


main = app("eval", evaluate)
