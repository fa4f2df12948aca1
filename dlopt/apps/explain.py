"""`dlopt explain run=RUN_DIR | ckpt_path=FILE [method=...]`: attributions of a trained run's predictions, with the
deletion curves that say how far each holds (dlopt/explain/). The options are checked before torch is imported."""

from pathlib import Path

from omegaconf import DictConfig

from dlopt.apps import app, task, trusted_targets
from dlopt.checks import validate
from dlopt.checks.commands import methods


@task
def explain(cfg: DictConfig, run_dir: Path) -> dict:
    from dlopt.saved_run import find

    validate(cfg, "explain")
    cfg.method = methods(cfg.method)
    saved = find(cfg.run, cfg.ckpt_path)  # before torch is imported: a wrong path is told at once
    from dlopt.explain.explain import explain as run_explanation

    return run_explanation(cfg, saved, run_dir, trusted_targets(cfg))


main = app("explain", explain)
