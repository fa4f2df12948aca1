"""The options of the commands that read finished runs or combine them (eval, explain, doctor, ensemble, runs): each
command's config rules, checked before torch is imported and before any file is read."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from dlopt.checks.training import check, check_thresholds
from dlopt.checks.values import check_integer, check_value, check_values, integer
from dlopt.errors import SweepError, UserError, did_you_mean
from dlopt.explain import BASELINES, METHODS


def _split(cfg: DictConfig) -> None:
    if cfg.split not in ("test", "val"):
        raise UserError(f"split={cfg.split} is not valid: expected test or val")


def _choice(key: str, value: Any, valid: Any) -> None:
    if value not in valid:
        raise UserError(f"{key}={value} is not valid{did_you_mean(str(value), valid)}; choose {', '.join(valid)}")


def evaluation(cfg: DictConfig) -> None:
    """dlopt eval."""
    _split(cfg)
    check_value("threads", cfg.threads)


def methods(value: Any) -> list[str]:
    """dlopt explain's method=NAME or method=[A,B]: the names, each known, none twice."""
    names = list(value) if isinstance(value, (list, ListConfig)) else [value]
    if not names or value is None:
        raise UserError(f"method={value if value is not None else 'null'} names no method; give one or a list of "
                        f"{', '.join(METHODS)}")
    for name in names:
        if name not in METHODS:
            raise UserError(f"method={name} is not a method of dlopt explain{did_you_mean(str(name), METHODS)}; "
                            f"choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def explanation(cfg: DictConfig) -> None:
    """dlopt explain."""
    methods(cfg.method)
    _split(cfg)
    options = cfg.explain
    check_value("seed", cfg.seed)
    check_value("threads", cfg.threads)
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


def diagnosis(cfg: DictConfig) -> None:
    """dlopt doctor: the diagnostics group (its thresholds decide what a symptom is), try=, remedies=."""
    if cfg.get("diagnostics"):
        check_values(cfg.diagnostics, "diagnostics")
        check_thresholds(cfg)
    if not isinstance(cfg.get("try"), bool):
        raise UserError(f"try={cfg.get('try')} is not valid; give true or false")
    if not isinstance(cfg.remedies, int) or isinstance(cfg.remedies, bool) or cfg.remedies < 1:
        raise UserError(f"remedies={cfg.remedies} is not valid; give an integer >= 1 (how many remedies try=true "
                        "trains)")


def ensemble(cfg: DictConfig) -> None:
    """dlopt ensemble: method= trains members (their config is a run's, checked as dlopt train checks it), runs=
    combines finished runs."""
    from dlopt.ensemble.selection import COMBINES, SELECTIONS
    from dlopt.ensemble.stacking import META
    from dlopt.ensemble.training import METHODS as ENSEMBLES

    options = cfg.ensemble
    runs = cfg.runs not in (None, [], "")
    if cfg.method is None and not runs:
        raise UserError(f"give method={'|'.join(ENSEMBLES)} (train the members) or runs=SWEEP_DIR or "
                        "runs=[RUN_DIR,RUN_DIR,...] (combine finished runs)")
    if cfg.method is not None and runs:
        raise UserError(f"give method={cfg.method} (train the members) or runs={cfg.runs} (combine finished runs), "
                        "not both")
    if cfg.method is not None:
        _choice("method", cfg.method, ENSEMBLES)
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
        check(cfg)  # the members' config, before anything trains
    else:
        _choice("ensemble.select", options.select, SELECTIONS)
        check_integer("ensemble.k", options.k, least=2)
        check_integer("ensemble.rounds", options.rounds, least=1)
    _choice("ensemble.combine", options.combine, COMBINES)


FORMATS = ("table", "md", "csv", "json")


def key_list(value: Any, knob: str) -> list:
    """dlopt runs' by=: a key or a list of keys (by=optimizer, by=[optimizer,scheduler])."""
    if value is None:
        return []
    items = OmegaConf.to_container(value) if isinstance(value, ListConfig) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise UserError(f"{knob}={value} is not valid; give a key or a list of keys, e.g. {knob}=optimizer or "
                        f"{knob}=[optimizer,scheduler]")
    return items


def listing(cfg: DictConfig) -> None:
    """dlopt runs (by= only when it groups: compare= ignores it)."""
    if cfg.format not in FORMATS:
        raise UserError(f"format={cfg.format} is not valid; give one of {', '.join(FORMATS)}")
    if cfg.limit is not None and (not isinstance(cfg.limit, int) or isinstance(cfg.limit, bool) or cfg.limit < 1):
        raise UserError(f"limit={cfg.limit} is not valid; give an integer >= 1, or null for every run")
    if not isinstance(cfg.path, str) or not cfg.path:
        raise UserError(f"path={cfg.path} is not valid; give a folder of runs, e.g. path=outputs")
    if not isinstance(cfg.sort, str) or not isinstance(cfg.metric, str):
        raise UserError("sort= and metric= take a metric name, e.g. sort=test/acc")
    if cfg.compare is not None and not isinstance(cfg.compare, ListConfig):
        raise UserError(f"compare={cfg.compare} is not valid; give a list of run folders, e.g. "
                        "compare=[outputs/train/A,outputs/train/B]")
    if cfg.compare is None:
        key_list(cfg.by, "by")


# command (its app's config name) -> its rules; train and tune_lr check a run's config (dlopt.checks.validate)
COMMANDS = {"eval": evaluation, "explain": explanation, "doctor": diagnosis, "ensemble": ensemble, "runs": listing}
