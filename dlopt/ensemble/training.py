"""Train an ensemble's members: each an ordinary `dlopt train` run under the ensemble's folder (members/N), trained
as a Hydra sweep in a child process, so the user's launcher (hydra/launcher=joblib side by side, submitit on SLURM)
runs them. Member N has seed `seed + N` and every member the same data split (data.split_seed fixed).

- bagging: all members in one sweep, each on a bootstrap resample of the training split (data.bootstrap=true).
- boosting (SAMME): one member after another; member N draws its training resample with the sample weights the
  errors of the members before it left (data.sample_weights), see boosting.py.
- stacking: each member with its own override set (ensemble.members as a list), one sweep per member.

A member folder that holds a finished run trained with the same overrides is kept: started again in the same folder
(hydra.run.dir=...), an ensemble trains only the members that did not finish. Nothing here imports torch.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from dlopt.errors import UserError
from dlopt.hydra_glue import fold_subdir, member_subdir

log = logging.getLogger(__name__)

METHODS = ("bagging", "boosting", "stacking")
OWN_KEYS = ("method", "runs", "ensemble", "seed")  # the ensemble command's keys: not passed on to its members


@dataclass(frozen=True)
class Plan:
    """What the members are: their shared overrides (the user's train overrides, the fixed split) and each member's
    own (an override set of ensemble.members, or none), the launcher overrides, the base seed."""

    shared: list[str]
    own: list[list[str]]
    launcher: list[str]
    seed: int

    def overrides(self, n: int, extra: Sequence[str] = ()) -> list[str]:
        """Member n's overrides: the shared ones but those its own set (or `extra`) gives again, which win."""
        mine = [*self.own[n], *extra]
        return [*without(self.shared, mine), *mine, f"seed={self.seed + n}"]


def _key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def without(overrides: Sequence[str], given: Sequence[str]) -> list[str]:
    """`overrides` but those of a key that `given` sets too."""
    keys = {_key(o) for o in given}
    return [o for o in overrides if _key(o) not in keys]


def member_sets(members: Any) -> list[list[str]]:
    """ensemble.members: a count (that many members of one config) or a list of override sets, one per member
    ('model=mlp optimizer=sgd'; a word without '=' names an experiment: conf/experiment/NAME.yaml)."""
    if isinstance(members, int) and not isinstance(members, bool):
        return [[] for _ in range(members)]
    return [[w if "=" in w else f"experiment={w}" for w in shlex.split(str(entry))] for entry in members]


def plan(task_overrides: Sequence[str], hydra_overrides: Sequence[str], members: Any, seed: int,
         split_seed: Any) -> Plan:
    """The members' overrides from the ensemble command's own (HydraConfig overrides.task and .hydra)."""
    shared = [o for o in task_overrides if _key(o).split(".")[0] not in OWN_KEYS and _key(o) != "data.split_seed"]
    launcher = [o for o in hydra_overrides if o.startswith(("hydra/launcher=", "hydra.launcher."))]
    return Plan([*shared, f"data.split_seed={split_seed}"], member_sets(members), launcher, seed)


def check_members(plan: Plan, config_dirs: Sequence[str] = ()) -> None:
    """Each member's overrides compose into a train config (`dlopt train --cfg job`): a member override set that
    does not is named before anything trains."""
    for n, own in enumerate(plan.own):
        fixed = [o for o in own if _key(o) in ("seed", "data.split_seed")]
        if fixed:
            raise UserError(f"ensemble.members[{n}] sets {fixed[0]}: member N's seed is the ensemble's seed + N and "
                            "every member shares its data split; set seed= (and data.split_seed=) for the ensemble")
        if not own:
            continue
        done = subprocess.run([sys.executable, "-m", "dlopt", "train", "--cfg", "job", *_dirs(config_dirs),
                               *plan.overrides(n)], capture_output=True, text=True)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or ["it does not compose"]
            why = next((line for line in lines if line.startswith("dlopt train: ")), lines[-1])
            why = why.removeprefix("dlopt train: ")
            raise UserError(f"ensemble.members[{n}]={' '.join(own)} does not compose into a train config: {why}")


def _normal(overrides: Sequence[str]) -> list[str]:
    """Overrides as Hydra writes a sweep job's (data.bootstrap=true is saved as data.bootstrap=True), sorted."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    return sorted(f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in parsed)


def _dirs(config_dirs: Sequence[str]) -> list[str]:
    return [arg for d in config_dirs for arg in ("--config-dir", d)]


def finished(folder: Path, overrides: list[str]) -> bool:
    """True if `folder` holds a finished member trained with `overrides`; a folder left by a member that did not
    finish is removed (it trains again); UserError if it holds a run of other overrides."""
    saved = folder / ".hydra" / "overrides.yaml"
    if not folder.exists():
        return False
    try:
        had = yaml.safe_load(saved.read_text()) if saved.is_file() else None
    except (OSError, yaml.YAMLError):
        had = None
    if had is not None and _normal(had) != _normal(overrides):
        raise UserError(f"{folder} holds a member trained with other overrides ({' '.join(had)}); this ensemble "
                        f"trains it with {' '.join(overrides)}: start it in a new folder")
    if (folder / "metrics.json").is_file() or (folder / "error.txt").is_file():
        return True
    shutil.rmtree(folder)  # killed mid-way: trained again from the start
    return False


def train(plan: Plan, members_dir: Path, numbers: Sequence[int], extra: Optional[dict[int, list[str]]] = None,
          config_dirs: Sequence[str] = (), folds: int = 0) -> None:
    """Train the members `numbers` that have not finished, each into members_dir/N: members with the same overrides
    but their seed in one sweep (`seed=a,b,c`). `extra`: more overrides of a member (boosting's weights). With
    `folds` K, member N is K runs members_dir/N/k, one sweep over data.fold=k/K (stacking's out-of-fold
    predictions). A sweep that fails is reported; the members that finished are kept."""
    extra = extra or {}
    if folds:
        for n in numbers:
            runs = {k: [*extra.get(n, ()), f"data.fold={k}/{folds}"] for k in range(folds)}
            todo = [k for k, more in runs.items()
                    if not finished(members_dir / str(n) / str(k), plan.overrides(n, more))]
            if todo:
                _sweep(plan, members_dir / str(n), [*plan.own[n], *extra.get(n, ())],
                       [f"seed={plan.seed + n}", "data.fold=" + ",".join(f"{k}/{folds}" for k in todo)],
                       fold_subdir(), f"member {n}, folds {', '.join(map(str, todo))}", config_dirs)
        return
    todo = [n for n in numbers if not finished(members_dir / str(n), plan.overrides(n, extra.get(n, ())))]
    if len(todo) < len(numbers):
        log.info("members %s finished before: kept", ", ".join(str(n) for n in numbers if n not in todo))
    groups: dict[tuple[str, ...], list[int]] = {}
    for n in todo:
        groups.setdefault((*plan.own[n], *extra.get(n, ())), []).append(n)
    for own, group in groups.items():
        subdir = str(group[0]) if len(group) == 1 else member_subdir(plan.seed)
        _sweep(plan, members_dir, list(own), ["seed=" + ",".join(str(plan.seed + n) for n in group)], subdir,
               f"member{'s' if len(group) > 1 else ''} {', '.join(map(str, group))}", config_dirs)


def _sweep(plan: Plan, folder: Path, own: list[str], swept: list[str], subdir: str, what: str,
           config_dirs: Sequence[str]) -> None:
    """`dlopt train -m` of the members' shared overrides, `own` and the `swept` ones into folder/SUBDIR."""
    command = [sys.executable, "-m", "dlopt", "train", "-m", *_dirs(config_dirs), *without(plan.shared, own), *own,
               *swept, *plan.launcher, f"hydra.sweep.dir={folder}", f"hydra.sweep.subdir={subdir}",
               "~hydra.callbacks.sweep_summary"]
    log.info("training %s: dlopt train -m %s", what, " ".join([*without(plan.shared, own), *own, *swept]))
    if subprocess.run(command).returncode != 0:
        log.error("training %s stopped with an error (see the messages above); the runs that finished are kept in "
                  "%s: start the ensemble again in the same folder (hydra.run.dir=...) to train the others", what,
                  folder)
