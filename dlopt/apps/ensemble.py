"""`dlopt ensemble runs=SWEEP_DIR|[RUN,...]`: an ensemble of finished runs, selected on the validation split and
scored beside its members (dlopt/ensemble/). Reads files only: no torch."""

from pathlib import Path

from omegaconf import DictConfig

from dlopt.apps import app, task
from dlopt.checks import check_integer
from dlopt.errors import UserError, did_you_mean


def check(cfg: DictConfig) -> None:
    from dlopt.ensemble.selection import COMBINES, SELECTIONS

    options = cfg.ensemble
    if cfg.runs is None or cfg.runs == [] or cfg.runs == "":
        raise UserError("give runs=SWEEP_DIR (a sweep or search folder) or runs=[RUN_DIR,RUN_DIR,...]: the finished "
                        "runs to combine")
    for key, value, valid in (("select", options.select, SELECTIONS), ("combine", options.combine, COMBINES)):
        if value not in valid:
            raise UserError(f"ensemble.{key}={value} is not valid{did_you_mean(str(value), valid)}; choose "
                            f"{', '.join(valid)}")
    check_integer("ensemble.k", options.k, least=2)
    check_integer("ensemble.rounds", options.rounds, least=1)


@task
def ensemble(cfg: DictConfig, run_dir: Path) -> dict:
    check(cfg)
    from dlopt.ensemble.build import ensemble as build

    return build(cfg, run_dir)


main = app("ensemble", ensemble)
