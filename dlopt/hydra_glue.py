"""The handoff from `dlopt COMMAND ARGS` to Hydra, and every piece of global state it takes, in one place.

- `hydra_args(command, args)`: the one rewrite of a command line into Hydra's arguments, with the one-line refusals
  of what Hydra would report in many lines (tests/test_hydra_glue.py holds one row per rewrite).
- `register_resolvers()`: dlopt's OmegaConf resolvers, which conf/ and the override strings below call by name.
  Every entry point calls it, never an import: each app's main (dlopt.apps.app), a process a launcher hands a job
  to (`Job`), and code that composes a config itself (tests, bench/).
- `run(...)`: one Hydra app on those arguments: sys.argv as Hydra parses it, then as DDP's relaunch reads it, and
  HYDRA_FULL_ERROR while Hydra runs (see `run`).

Resolving a config creates nothing: `${dlopt.fresh:PATH}` only names a folder, which dlopt.folders.FreshFolders
claims when the run or sweep starts. Only the standard library is imported at module level: dlopt/cli.py imports
this module before it knows the command, and `dlopt --help` imports nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from typing import Any, Callable, Iterator, Sequence

from dlopt.errors import UserError

# Hydra's flags that take a value; Hydra wants every flag before the overrides
VALUE_FLAGS = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--cfg", "-c", "--package", "-p",
               "--info", "-i", "--experimental-rerun"}
# Hydra's modes: it takes one of them per call
MODES = {"-r": "--run", "--run": "--run", "-m": "--multirun", "--multirun": "--multirun", "-c": "--cfg",
         "--cfg": "--cfg", "-i": "--info", "--info": "--info"}
ADDITIVE_GROUPS = ("callbacks",)  # groups whose options add up rather than exclude each other
CONDITIONS = ("where",)  # keys whose value holds KEY=VALUE conditions, which Hydra's grammar takes only quoted
# Hydra's flags that take no value
BARE_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--resolve", "--shell-completion", "-sc"}
# the key that names a folder, for a command given a bare path (`dlopt eval outputs/train/DATE/TIME`)
FOLDER_KEYS = {"eval": "run", "doctor": "run", "explain": "run", "ensemble": "runs", "runs": "path", "train": "resume"}
LONGEST_KEY = 255  # a file name's limit: Hydra looks for a config group of that name on disk


def hydra_args(command: str, args: Sequence[str]) -> list[str]:
    """The arguments Hydra gets for `dlopt COMMAND ARGS`. Refused with a UserError (one line):
    - two Hydra modes at once (`-m --cfg job`);
    - an override without a key (`=3`), or with a key longer than a file name may be.
    - a flag Hydra does not have (`--optimizer=sgd`, `--epochs 3`) and a bare word or path (`dlopt train resnet`,
      `dlopt eval outputs/train/DATE/TIME`): the line names the override it may have meant;
    Rewritten, in this order:
    - Hydra's flags before the overrides: `model=mlp --cfg job` -> `--cfg job model=mlp`;
    - outside -m, a comma list of an additive group is both options in one run: `callbacks=default,ema` ->
      `callbacks=[default,ema]` (with -m it stays a sweep);
    - a condition is quoted, so that it reaches the command as one string: `where=model=cnn` -> `where="model=cnn"`;
    - `train resume=RUN_DIR` runs in RUN_DIR and keeps its .hydra as the run started: `hydra.run.dir=RUN_DIR
      hydra.output_subdir=null` added (dlopt/apps/resume.py checks RUN_DIR first)."""
    modes = list(dict.fromkeys(MODES[a] for a in args if a in MODES))
    if len(modes) > 1:
        hint = (" (--cfg job prints the config of a single run: drop -m to see it)"
                if {"--multirun", "--cfg"} <= set(modes) else "")
        raise UserError(f"{' and '.join(modes)} cannot be combined; give one of them{hint}")
    for arg, before, following in zip(args, [None, *args[:-1]], [*args[1:], None]):
        if before not in VALUE_FLAGS:  # a flag's value (--cfg job) is not an override
            _refuse_slip(command, arg, following)
        key = arg.partition("=")[0]
        if "=" in arg and not arg.startswith("-") and not key.lstrip("+~"):
            raise UserError(f"{arg} has no key: give group=option or group.key=value")
        if "=" in arg and len(key) > LONGEST_KEY:
            raise UserError(f"{key[:40]}... ({len(key)} characters) is not a key of the config: keys and group names "
                            f"are at most {LONGEST_KEY} characters; give group=option or group.key=value")

    flags, overrides, rest = [], [], iter(args)
    for arg in rest:
        if arg.startswith("-"):
            flags.append(arg)
            if arg in VALUE_FLAGS:
                value = next(rest, None)
                if value is not None:  # --info takes an optional value: an override after it is not its value
                    (flags if arg not in ("--info", "-i") or "=" not in value else overrides).append(value)
        else:
            overrides.append(arg)

    multirun = any(a in ("-m", "--multirun") for a in args)
    out = []
    for arg in flags + overrides:
        key, _, value = arg.partition("=")
        if key in ADDITIVE_GROUPS and not multirun and "," in value and value[:1] != "[":
            arg = f"{key}=[{value}]"
        elif key in CONDITIONS and value and value[0] not in "'\"[" and "=" in value and '"' not in value:
            arg = f'{key}="{value}"'
        out.append(arg)

    if command == "train" and any(a.startswith("resume=") for a in out):
        from dlopt.apps.resume import redirect

        out = redirect(out)
    return out


def _refuse_slip(command: str, arg: str, following: str | None) -> None:
    """UserError naming the fix for an argument that is neither a flag of Hydra's nor an override (KEY=VALUE)."""
    if arg.startswith("-") and arg.partition("=")[0] not in VALUE_FLAGS | BARE_FLAGS | set(MODES):
        key, has_value, value = arg.lstrip("-").partition("=")
        if not has_value and following is not None and not following.startswith("-") and "=" not in following:
            value, has_value = following, True  # `--epochs 3`
        meant = f"{key}={value}" if has_value else f"{key}=VALUE"
        raise UserError(f"{arg}{' ' + following if has_value and '=' not in arg else ''} is not a flag of dlopt "
                        f"{command}; an override is written without dashes: {meant} (dlopt {command} --help lists "
                        "the groups and keys)")
    if arg.startswith(("-", "~")) or "=" in arg or not arg.strip():  # ~KEY deletes a key
        return
    if command in FOLDER_KEYS and (os.sep in arg or os.path.exists(arg)):
        raise UserError(f"{arg} is not an override (KEY=VALUE); did you mean {FOLDER_KEYS[command]}={arg}?")
    groups = [group for group in sorted(os.listdir(config_dir())) if arg in group_options(group)]
    meant = f"; did you mean {' or '.join(f'{group}={arg}' for group in groups)}?" if groups else \
        f"; write KEY=VALUE (dlopt {command} --help lists the groups and keys)"
    raise UserError(f"{arg} is not an override (KEY=VALUE){meant}")


def config_dir() -> str:
    """conf/ shipped inside the wheel (dlopt/conf), else the one at the root of a source checkout."""
    package = os.path.dirname(os.path.abspath(__file__))
    shipped = os.path.join(package, "conf")
    return shipped if os.path.isdir(shipped) else os.path.join(os.path.dirname(package), "conf")


def group_options(group: str) -> list[str]:
    """The options of one of dlopt's config groups (none for a name that is not a group); Hydra names none when
    several were given as a list, callbacks=[default,emma]."""
    folder = os.path.join(config_dir(), group)
    return sorted(name[:-5] for name in os.listdir(folder) if name.endswith(".yaml")) if os.path.isdir(folder) else []


def member_subdir(base_seed: int) -> str:
    """hydra.sweep.subdir of an ensemble's members trained as one sweep over their seeds (dlopt/ensemble/training.py):
    member N's folder is N, its seed minus the ensemble's."""
    return f"'${{dlopt.member:${{seed}},{base_seed}}}'"


def fold_subdir() -> str:
    """hydra.sweep.subdir of a member's folds trained as one sweep over data.fold=k/K: fold k's folder is k."""
    return "'${dlopt.fold:${data.fold}}'"


def _defaults(choices: Any) -> str:
    return ", ".join(f"{group}={option if option is not None else '(none)'}"
                     for group, option in sorted(choices.items()) if not group.startswith("hydra"))


def _member(seed: Any, base: Any) -> str:
    return str(int(seed) - int(base))


def _fold(fold: Any) -> str:
    return str(fold).partition("/")[0]  # 'k/K' -> k


def _resolvers() -> dict[str, tuple[Callable[..., Any], bool]]:
    """name -> (function, whether OmegaConf caches its value in the config, as Hydra's `now`)."""
    from dlopt import folders
    from dlopt.training import nodes

    return {
        "dlopt.fresh": (folders.fresh, True),  # conf/hydra/dlopt.yaml: the name of the command's own folder
        "dlopt.defaults": (_defaults, False),  # conf/hydra/dlopt.yaml, --help: each config group's default option
        "dlopt.member": (_member, False),  # member_subdir
        "dlopt.fold": (_fold, False),  # fold_subdir
        "dlopt.run_id": (nodes.run_id, True),  # conf/trainer/nodes.yaml: the run folder every machine shares
        "dlopt.rank": (nodes.global_rank, False),  # conf/trainer/nodes.yaml: the log file of this process's rank
    }


RESOLVERS = ("dlopt.fresh", "dlopt.defaults", "dlopt.member", "dlopt.fold", "dlopt.run_id", "dlopt.rank")


def register_resolvers() -> None:
    """Register dlopt's resolvers with OmegaConf (those it has already are kept): before a config that calls them is
    resolved. A config read back from a file may call none of them (dlopt.saved_run.RESOLVERS)."""
    from omegaconf import OmegaConf

    for name, (function, cached) in _resolvers().items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function, use_cache=cached)


@contextlib.contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    """The environment variable `name` set to `value` (None: unset) while the block runs."""
    before = os.environ.get(name)
    _set_environment(name, value)
    try:
        yield
    finally:
        _set_environment(name, before)


def _set_environment(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


class Job:
    """The task function Hydra runs for a command: `function(cfg)`, with the sys.argv and environment `run` chose.

    Launchers that run jobs in processes of their own (joblib, submitit, ray) pickle it; a process that unpickles it
    registers dlopt's resolvers there, which the job's config calls before `function` runs (member_subdir)."""

    def __init__(self, function: Callable[[Any], Any]) -> None:
        functools.update_wrapper(self, function)  # Hydra names the job (hydra.job.name) after function's module
        self.function = function
        self.argv: list[str] = []
        self.full_error: str | None = None

    def __call__(self, cfg: Any) -> Any:
        if self.argv:
            sys.argv = list(self.argv)
        with _environment("HYDRA_FULL_ERROR", self.full_error):
            return self.function(cfg)

    def __setstate__(self, state: dict[str, Any]) -> None:
        register_resolvers()
        self.__dict__.update(state)


def run(hydra_main: Callable[[], Any], job: Job, command: str, args: list[str], script: str) -> None:
    """Run `hydra_main` (hydra.main around `job`) on `dlopt COMMAND ARGS`, ARGS as hydra_args made them.

    - Hydra parses sys.argv: it is `["dlopt COMMAND", *ARGS]` (the program's name in Hydra's messages) until Hydra
      has parsed it.
    - The job runs with sys.argv `[script, COMMAND, *ARGS]`: the command that runs this one again. This is the DDP
      relaunch argv: Lightning's DDP launcher starts ranks >= 1 by running sys.argv again (`python -m dlopt.__main__`
      when dlopt was started with -m), adding hydra.run.dir=<this run's folder>, so each rank composes the same
      config into the same folder.
    - HYDRA_FULL_ERROR=1 while Hydra runs: Hydra then raises what went wrong instead of printing it and exiting, for
      the app's one-line report. The job, and the processes it starts (DDP's ranks, an ensemble's members, doctor's
      remedies), see the user's own setting.
    sys.argv and the environment are as they were when this returns."""
    before = sys.argv
    job.argv, job.full_error = [script, command, *args], os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [f"dlopt {command}", *args]
    try:
        with _environment("HYDRA_FULL_ERROR", "1"):
            hydra_main()
    finally:
        sys.argv = before
