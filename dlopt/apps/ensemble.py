"""`dlopt ensemble method=bagging|boosting|stacking [train overrides]` trains an ensemble's members and combines them;
`dlopt ensemble runs=SWEEP_DIR|[RUN,...]` combines finished runs. Either is scored beside its members
(dlopt/ensemble/). The command itself imports no torch: its members train in `dlopt train` processes."""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig

from dlopt.apps import app, task
from dlopt.checks import check_integer
from dlopt.errors import SweepError, UserError, did_you_mean


def _choice(key: str, value, valid) -> None:
    if value not in valid:
        raise UserError(f"{key}={value} is not valid{did_you_mean(str(value), valid)}; choose {', '.join(valid)}")


def check(cfg: DictConfig) -> None:
    from dlopt.ensemble.selection import COMBINES, SELECTIONS
    from dlopt.ensemble.stacking import META
    from dlopt.ensemble.training import METHODS

    options = cfg.ensemble
    runs = cfg.runs not in (None, [], "")
    if cfg.method is None and not runs:
        raise UserError(f"give method={'|'.join(METHODS)} (train the members) or runs=SWEEP_DIR or "
                        "runs=[RUN_DIR,RUN_DIR,...] (combine finished runs)")
    if cfg.method is not None and runs:
        raise UserError(f"give method={cfg.method} (train the members) or runs={cfg.runs} (combine finished runs), "
                        "not both")
    if cfg.method is not None:
        _choice("method", cfg.method, METHODS)
        members = options.members
        if isinstance(members, ListConfig):
            if len(members) < 2 or not all(isinstance(m, str) and m.strip() for m in members):
                raise UserError(f"ensemble.members={list(members)} is not valid: expected at least 2 override sets "
                                "('[model=cnn,model=mlp]'), or a number of members")
        else:
            check_integer("ensemble.members", members, least=2)
        _choice("ensemble.meta", options.meta, META)
        if options.folds != 0:
            check_integer("ensemble.folds", options.folds, least=2)
            if cfg.method != "stacking":
                raise UserError(f"ensemble.folds={options.folds} is stacking's (out-of-fold predictions); "
                                f"method={cfg.method} trains each member once: leave ensemble.folds=0")
        for key, why in (("search", "search first (dlopt train -m search=...), then combine its trials with "
                                    "dlopt ensemble runs=SEARCH_DIR"),
                         ("resume", "to continue an ensemble, start the same command again with "
                                    "hydra.run.dir=ITS_FOLDER")):
            if cfg.get(key):  # search=... sweeps the ensemble command itself: stop it at the first
                raise SweepError(f"{key}= does not apply to an ensemble's members: {why}")
        from dlopt.checks import check as check_train

        check_train(cfg)  # the members' config, before anything trains
    else:
        _choice("ensemble.select", options.select, SELECTIONS)
        check_integer("ensemble.k", options.k, least=2)
        check_integer("ensemble.rounds", options.rounds, least=1)
    _choice("ensemble.combine", options.combine, COMBINES)


@task
def ensemble(cfg: DictConfig, run_dir: Path) -> dict:
    check(cfg)
    from dlopt.ensemble.build import ensemble as build

    hydra = HydraConfig.get()
    dirs = tuple(s.path for s in hydra.runtime.config_sources if s.provider == "command-line")
    return build(cfg, run_dir, (list(hydra.overrides.task), list(hydra.overrides.hydra)), dirs)


main = app("ensemble", ensemble)
