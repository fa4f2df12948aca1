"""`dlopt explain run=RUN_DIR | ckpt_path=FILE [method=...]`: attributions of a trained run's predictions, with the
deletion curves that say how far each holds (dlopt/explain/). The options are checked before torch is imported."""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig

from dlopt import threads
from dlopt.apps import app, task, trusted_targets
from dlopt.checks import check_integer, integer
from dlopt.errors import UserError, did_you_mean
from dlopt.explain import BASELINES, METHODS


def methods(value: Any) -> list[str]:
    """method=NAME or method=[A,B]: the names, each known, none twice."""
    names = list(value) if isinstance(value, (list, ListConfig)) else [value]
    if not names or value is None:
        raise UserError(f"method={value if value is not None else 'null'} names no method; give one or a list of "
                        f"{', '.join(METHODS)}")
    for name in names:
        if name not in METHODS:
            raise UserError(f"method={name} is not a method of dlopt explain{did_you_mean(str(name), METHODS)}; "
                            f"choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def check(cfg: DictConfig) -> None:
    if cfg.split not in ("test", "val"):
        raise UserError(f"split={cfg.split} is not valid: expected test or val")
    options = cfg.explain
    check_integer("seed", cfg.seed)
    threads.check(cfg.threads)
    check_integer("explain.sample_seed", options.sample_seed)
    for key in ("samples", "steps", "evaluations", "repeats", "batch_size"):
        check_integer(f"explain.{key}", options[key], least=1)
    if options.patch is not None and not (integer(options.patch) and options.patch >= 1):
        raise UserError(f"explain.patch={options.patch} is not valid: expected null (a quarter of an image's side, a "
                        "16th of a signal) or an integer >= 1")
    if options.baseline not in BASELINES:
        hint = did_you_mean(str(options.baseline), BASELINES)
        raise UserError(f"explain.baseline={options.baseline} is not valid{hint}; choose {', '.join(BASELINES)}")
    target = options.target
    if target not in ("predicted", "label") and not (integer(target) and target >= 0):
        raise UserError(f"explain.target={target} is not valid: expected predicted, label or a class number >= 0")
    if not isinstance(options.randomization, bool):
        raise UserError(f"explain.randomization={options.randomization} is not valid: expected true or false")


@task
def explain(cfg: DictConfig, run_dir: Path) -> dict:
    from dlopt.saved_run import find

    cfg.method = methods(cfg.method)
    check(cfg)
    saved = find(cfg.run, cfg.ckpt_path)  # before torch is imported: a wrong path is told at once
    from dlopt.explain.explain import explain as run_explanation

    return run_explanation(cfg, saved, run_dir, trusted_targets(cfg))


main = app("explain", explain)
