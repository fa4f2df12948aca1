"""One Hydra app per command. Only Hydra is imported at module level: `--help` and `--cfg`
never import torch; the task functions import the training code when they run."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from dlopt import folders, hydra_glue, terminal
from dlopt.hydra_glue import config_dir, group_options
from dlopt.errors import INTERRUPTED, Interrupted, SweepError, UserError, cause_of, did_you_mean, os_error_message

log = logging.getLogger("dlopt")


def rank_zero() -> bool:
    """False in the processes a distributed launch adds to a run: Lightning's DDP launcher sets
    LOCAL_RANK (and NODE_RANK) for them, SLURM sets SLURM_PROCID, torchrun RANK."""
    return all(os.environ.get(key, "0") == "0" for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def user_message(err: BaseException, composing: bool = False) -> str | None:
    """The one line for an exception a user can cause: a UserError anywhere in err's chain of causes,
    with `composing` also what Hydra found wrong while composing and a YAML file that does not parse,
    then a file or folder the system refused. None for anything else, a bug, which keeps its traceback."""
    user_error = cause_of(err, UserError)
    if user_error is not None:
        return str(user_error)
    if composing:
        message = composition_error(err) or yaml_error(err)
        if message is not None:
            return message
    os_error = cause_of(err, OSError)
    return os_error_message(os_error) if os_error is not None else None


def trusted_targets(cfg: DictConfig) -> frozenset[str]:
    """The targets a config read back from a file may build: those this command's config folders
    (dlopt's conf/, a --config-dir) and its composed config name (dlopt.saved_run)."""
    from dlopt.saved_run import allowed_targets

    sources = HydraConfig.get().runtime.config_sources
    return allowed_targets([Path(s.path) for s in sources if s.schema == "file"], cfg)


def task(run: Callable[[DictConfig, Path], Any]) -> Callable[[DictConfig], Any]:
    """Wrap `run(cfg, run_dir)` as a Hydra task function that reports user errors in one line.

    A single run that wrote its folder ends with "results in RUN_DIR", in these words for every command.

    A single run exits with status 2 after that line and, when it failed before writing
    anything but Hydra's own files, leaves no folder behind (only rank 0 of several processes
    removes it). In a sweep the failed run keeps its folder with the reason in error.txt, returns
    None, and the sweep goes on to the next run; a SweepError, or a file or folder the system
    refuses (a full disk), stops the sweep as it stops a run.
    """

    @functools.wraps(run)
    def task_function(cfg: DictConfig) -> Any:
        hydra = HydraConfig.get()
        run_dir = Path(hydra.runtime.output_dir)
        terminal.set_up()
        if not rank_zero():  # the terminal shows rank 0's messages; each rank's log file has all of its own
            for handler in logging.getLogger().handlers:
                if type(handler) is logging.StreamHandler:
                    handler.setLevel(logging.WARNING)
        try:
            result = run(cfg, run_dir)
            if hydra.mode != RunMode.MULTIRUN and rank_zero() and run_dir.is_dir() \
                    and not folders.only_hydra_files(run_dir):
                machine_readable = cfg.get("format") not in (None, "table", "md")  # dlopt runs format=json|csv
                log.info("results in %s", run_dir, extra=terminal.FILE_ONLY if machine_readable else None)
            return result
        except Exception as err:
            message = user_message(err)
            if message is None:
                raise
            log.error("%s", message, extra=terminal.FILE_ONLY)  # the log file keeps it; the terminal gets:
            print(f"dlopt {command_of(hydra)}: {message}", file=sys.stderr, flush=True)
            user_error = cause_of(err, UserError)  # None for a refused file or folder: it stops the sweep
            if hydra.mode == RunMode.MULTIRUN and user_error is not None and not isinstance(user_error, SweepError):
                with contextlib.suppress(OSError):  # the reason is in the log too
                    (run_dir / "error.txt").write_text(f"{message}\n")
                return None
            if (rank_zero() or folders.claimed(run_dir)) and folders.only_hydra_files(run_dir):
                shutil.rmtree(run_dir, ignore_errors=True)
            folders.discard()  # what this process claimed: on another machine than rank 0's, its own folder
            raise SystemExit(2) from None
        except BaseException as err:
            if not interrupted(err):
                raise
            print(f"dlopt {command_of(hydra)}: {left_after_interrupt(command_of(hydra), run_dir)}", file=sys.stderr,
                  flush=True)
            if hydra.mode == RunMode.MULTIRUN:  # the sweep (or search) stops as it does on Ctrl-C
                raise Interrupted from None
            raise SystemExit(INTERRUPTED) from None

    return task_function


def interrupted(err: BaseException | None) -> bool:
    """Ctrl-C: a KeyboardInterrupt, or what it led to while being handled: the SystemExit Lightning raises after
    shutting a fit down on one, an import it broke half-way (numpy's then fails with a RecursionError)."""
    while err is not None and not isinstance(err, KeyboardInterrupt):
        err = err.__cause__ or err.__context__
    return err is not None


def left_after_interrupt(command: str, run_dir: Path) -> str:
    """What a run stopped by Ctrl-C keeps, as one line: a training run that saved a checkpoint stays, with
    interrupted.txt saying how to continue (dlopt runs lists it as interrupted); anything else this process made is
    removed, since nothing in it can be continued."""
    if command == "train" and (run_dir / "checkpoints" / "last.ckpt").is_file():
        again = f"dlopt train resume={run_dir}"
        with contextlib.suppress(OSError), open(run_dir / "interrupted.txt", "a") as note:
            note.write(f"interrupted (Ctrl-C); continue with: {again}\n")
        return f"interrupted; {run_dir} keeps the last finished epoch (checkpoints/last.ckpt); continue with: {again}"
    if folders.claimed(run_dir) and rank_zero():
        shutil.rmtree(run_dir, ignore_errors=True)
    folders.discard()
    return "interrupted before anything was saved; nothing is left behind"


def command_of(hydra: Any) -> str:
    """The command a run belongs to, named by its config (conf/tune_lr.yaml: tune-lr)."""
    return str(hydra.job.config_name).replace("_", "-")


def yaml_error(err: BaseException) -> str | None:
    """'FILE, line L, column C: what is wrong' for a YAML file that does not parse (a --config-dir
    experiment), else None."""
    import yaml

    problem = cause_of(err, yaml.MarkedYAMLError)
    if problem is None:
        return None
    mark = problem.problem_mark or problem.context_mark
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else "a config file"
    context = f" ({problem.context})" if problem.context else ""
    return f"{where}: {problem.problem}{context}; that file is not valid YAML"


def override_error(err: OverrideParseException) -> str:
    """One line naming the override Hydra could not parse and why; a value with characters Hydra's
    grammar takes only quoted (non-ASCII letters, spaces, ...) is shown quoted."""
    key, _, value = err.override.partition("=")
    if err.message.startswith("LexerNoViableAltException"):
        return (f"{err.override}: this value must be quoted for Hydra: '{key}=\"{value}\"' "
                "(the outer quotes are for the shell)")
    if value.startswith("[") and "=" in value and '"' not in value:  # a list of override sets, unquoted
        items = ",".join(f'"{item.strip()}"' for item in value.strip("[]").split(","))
        return (f"{err.override}: an item holding '=' must be quoted for Hydra: '{key}=[{items}]' (the outer quotes "
                "are for the shell)")
    lines = [line.strip() for line in err.message.splitlines()
             if line.strip() and not line.startswith(("See https", "Error parsing override"))]
    return (f"{err.override} is not a valid override ({'; '.join(lines) or 'it does not parse'}); see "
            "https://hydra.cc/docs/advanced/override_grammar/basic")


def composition_error(err: BaseException) -> str | None:
    """What Hydra found wrong while composing: one line for an unknown option or key, naming it,
    the closest valid name and the valid ones; Hydra's own message for anything else Hydra raised."""
    if not isinstance(err, CompactHydraException) or isinstance(err, InstantiationException):
        return None  # an object the config describes failed to build: a bug unless a UserError says otherwise
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and "/" in err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        options = err.options or group_options(group)
        if options:
            return (f"{group}={option} is not an option of {group}{did_you_mean(option, options)}; "
                    f"choose one of {', '.join(options)}")
    if isinstance(err, OverrideParseException):
        return override_error(err)
    ambiguous = re.match(r"Ambiguous value for argument '(.+?)'", str(err))
    if ambiguous:  # Hydra's own text offers three fixes in one line with escaped quotes
        override = ambiguous.group(1)
        key, _, value = override.partition("=")
        as_list = "" if group_options(key.lstrip("+")) else f", or write a list as {key}=[{value}]"
        return f"{override} gives several values: add -m to run one per value (a sweep), or give one value{as_list}"
    cause = err.__cause__
    unknown_key = isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key
    if unknown_key and getattr(cause, "parent_node", None) is not None:
        key = str(cause.key)
        parent = cause.full_key.rpartition(".")[0]
        keys = [str(k) for k in cause.parent_node.keys() if not str(k).startswith("_") and k != "hydra"]
        append = re.search(r"use (\+\S+)", str(err))
        return (f"{cause.full_key} is not a key of {parent or 'the config'}{did_you_mean(key, keys)}; its keys are "
                f"{', '.join(keys)}" + (f"; {append.group(1)} would add it as a new key" if append else ""))
    text = str(err).split("\n\nConfig search path")[0]  # Hydra's list of folders follows
    if cause is not None and str(cause).splitlines()[0] not in text:
        text += f": {cause}"
    return " ".join(line.strip() for line in text.splitlines()
                    if line.strip() and not line.strip().startswith(("full_key:", "object_type=")))


def register_plugins() -> None:
    """dlopt's sweeper and Ray launcher (hydra_plugins/dlopt_search). Hydra finds plugins by listing hydra_plugins/
    on sys.path, which misses them when dlopt is installed in editable mode (pip install -e)."""
    from hydra.core.plugins import Plugins
    from hydra_plugins.dlopt_search.ray_launcher import RayLauncher
    from hydra_plugins.dlopt_search.search_sweeper import SearchSweeper

    Plugins.instance().register(SearchSweeper)
    Plugins.instance().register(RayLauncher)


def app(config_name: str, task_function: Callable[[DictConfig], Any]) -> Callable[[str, list[str], str], None]:
    """The command's Hydra app: `main(command, args, script)` runs `task_function` on Hydra's arguments `args`
    (dlopt.hydra_glue.hydra_args) as dlopt.hydra_glue.run hands them to Hydra. A composition mistake
    (`model=resnot`, `model.dept=3`) is reported in one line with exit status 2, instead of Hydra's multi-line
    report; HYDRA_FULL_ERROR=1 set by the user keeps Hydra's own report and traceback."""
    job = hydra_glue.Job(task_function)
    hydra_main = hydra.main(version_base=None, config_path=config_dir(), config_name=config_name)(job)

    def main(command: str, args: list[str], script: str) -> None:
        hydra_glue.register_resolvers()
        register_plugins()
        try:
            hydra_glue.run(hydra_main, job, command, args, script)
        except KeyboardInterrupt:  # before a run started (composing), or a sweep its run stopped
            if rank_zero():
                folders.discard()
            raise
        except Exception as err:
            message = None if os.environ.get("HYDRA_FULL_ERROR") == "1" else user_message(err, composing=True)
            if message is None:
                raise
            print(f"dlopt {command}: {message}", file=sys.stderr)
            if rank_zero():
                folders.discard()  # e.g. a sweep folder holding only multirun.yaml
            raise SystemExit(2) from None

    return main
