"""`dlopt eval run=RUN_DIR | ckpt_path=FILE`: test metrics of a trained run, rebuilt from its own config."""

from pathlib import Path

from omegaconf import DictConfig

from dlopt import threads
from dlopt.apps import app, task, trusted_targets
from dlopt.checks import validate

@task
def evaluate(cfg: DictConfig, run_dir: Path) -> dict:
    from dlopt.saved_run import find

    validate(cfg, "eval")
    saved = find(cfg.run, cfg.ckpt_path)  # before torch is imported: a wrong path is told at once
    threads.use(cfg.threads)
    from dlopt.training.run import evaluate as run_evaluation

    metrics = run_evaluation(saved, cfg.split, run_dir, trusted_targets(cfg))
    return metrics


main = app("eval", evaluate)
