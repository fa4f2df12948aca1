"""A saved run: a run folder or checkpoint written by dlopt, opened as data, never as code.

Commands that start from finished runs (eval, resume, and those that read runs later) open them
here. What comes from a file is untrusted, since it may have come from elsewhere:
- a checkpoint is read with torch.load(weights_only=True): tensors and plain values, no pickled code;
- a config read back from a file builds only the targets that a trusted source names: the YAML
  files of the command's config folders (dlopt's conf/, a --config-dir) and the config the command
  composed from them and its command line; besides those, the public classes of torch.optim, its
  schedulers and Lightning's callbacks and loggers. It may use only the resolvers dlopt's conf/
  uses. Anything else is refused in one line naming the key and the target.
Hydra's own target policy is a blocklist (os.system is refused, pathlib.Path.write_text is not),
which is why the allowlist is here. Finding a run imports no torch.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from omegaconf import DictConfig, OmegaConf

from dlopt.checks import REQUIRED_GROUPS, torch_file
from dlopt.errors import UserError

# module -> base class: a public class of the module derived from it may be built from any file
LIBRARY_CLASSES = {
    "torch.optim": "torch.optim.Optimizer",
    "torch.optim.lr_scheduler": "torch.optim.lr_scheduler.LRScheduler",
    "lightning.pytorch.callbacks": "lightning.pytorch.callbacks.Callback",
    "lightning.pytorch.loggers": "lightning.pytorch.loggers.Logger",
}
# the resolvers a saved config may call (dlopt's conf uses these); ${a.b} references are always fine. dlopt's own
# (dlopt.hydra_glue.RESOLVERS: run folders, a machine's rank) are the running command's, never a file's
RESOLVERS = ("now", "oc.env", "oc.decode", "oc.select")
RUN_KEYS = ("seed", "monitor", *REQUIRED_GROUPS)  # what a run is built from
CHECKPOINT_KINDS = "a checkpoint written by dlopt train (RUN_DIR/checkpoints/best.ckpt or last.ckpt)"

_TARGET_LINE = re.compile(r"^\s*_target_:\s*['\"]?([\w.]+)", re.MULTILINE)
_RESOLVER_CALL = re.compile(r"\$\{\s*([\w.\-]+)\s*:")


@dataclass(frozen=True)
class SavedRun:
    """A checkpoint to load and how the user named it (`run=DIR` or `ckpt_path=FILE`, for messages)."""

    checkpoint: Path
    named: str


@dataclass(frozen=True)
class SavedEnsemble:
    """An ensemble folder of dlopt ensemble: its members' checkpoints (per member, one run or its K folds), their
    weights, how they combine (mean, vote, or stacking with the meta-learner's parameters in meta.npz)."""

    folder: Path
    named: str
    members: list[list[SavedRun]]
    weights: list[float]
    combine: str  # mean | vote | stacking
    meta: Optional[Path]

    @property
    def checkpoint(self) -> Path:  # where messages name "the checkpoint": the folder
        return self.folder


def saved_ensemble(folder: Path, named: str) -> SavedEnsemble:
    """The ensemble of `folder` from its ensemble.json (read as data): members of a trained ensemble are
    folder/members/NAME (NAME/k with folds), those of an ensemble of finished runs the run folders it names."""
    summary = read_json(folder / "ensemble.json", named)
    rows = summary.get("members") if isinstance(summary, dict) else None
    if summary is None or not isinstance(rows, list) or not all(
            isinstance(r, dict) and isinstance(r.get("run"), str) and isinstance(r.get("name"), str)
            and isinstance(r.get("weight"), (int, float)) for r in rows):
        raise UserError(f"{named}: {folder / 'ensemble.json'} is missing or not an ensemble's record; the ensemble "
                        "did not finish")
    method, folds = summary.get("method"), summary.get("folds") or 0
    if not isinstance(folds, int) or folds < 0:
        raise UserError(f"{named}: {folder / 'ensemble.json'} holds folds={folds}, not a count")
    combine = "stacking" if method == "stacking" else str(summary.get("combine", "mean"))
    if combine not in ("mean", "vote", "stacking"):
        raise UserError(f"{named}: {folder / 'ensemble.json'} combines by {combine}, not mean, vote or stacking")
    taken = [r for r in rows if r["weight"]]
    members = []
    for row in taken:
        base = folder / "members" / row["name"] if method else Path(row["run"])
        runs = [base / str(k) for k in range(folds)] if folds else [base]
        missing = [r for r in runs if not (r / "checkpoints" / "best.ckpt").is_file()]
        if missing:
            raise UserError(f"{named}: its member {row['name']} has no checkpoint ({missing[0]}/checkpoints/best.ckpt "
                            "is missing)")
        members.append([SavedRun(r / "checkpoints" / "best.ckpt", f"{named}, member {row['name']}") for r in runs])
    meta = folder / "meta.npz" if combine == "stacking" else None
    if meta is not None and not meta.is_file():
        raise UserError(f"{named}: {meta} is missing; a stacked ensemble predicts through its meta-learner")
    return SavedEnsemble(folder, named, members, [float(r["weight"]) for r in taken], combine, meta)


def find(run: Optional[str], ckpt_path: Optional[str]) -> SavedRun | SavedEnsemble:
    """The run a command names by run=RUN_DIR (its checkpoints/best.ckpt) or ckpt_path=FILE, or the ensemble of
    run=ENSEMBLE_DIR; UserError naming the key when it is missing or is not a run. Imports no torch."""
    if (run is None) == (ckpt_path is None):
        raise UserError("give exactly one of run=RUN_DIR (a dlopt train run folder) or ckpt_path=FILE (a .ckpt "
                        "written by dlopt train)")
    if ckpt_path is not None:
        path = Path(ckpt_path).expanduser()
        if path.is_dir():
            raise UserError(f"ckpt_path={ckpt_path} is a folder; give {CHECKPOINT_KINDS}, or run={ckpt_path} "
                            "for a run folder")
        if not path.is_file():
            raise UserError(f"ckpt_path={ckpt_path} does not exist; give {CHECKPOINT_KINDS}")
        torch_file(path, "ckpt_path", ckpt_path, CHECKPOINT_KINDS)
        return SavedRun(path, f"ckpt_path={ckpt_path}")
    folder = Path(run).expanduser()
    if not folder.is_dir():
        raise UserError(f"run={run} does not exist; give the folder of a dlopt train run "
                        "(outputs/train/DATE/TIME)")
    best = folder / "checkpoints" / "best.ckpt"
    if not best.is_file() and not (folder / ".hydra").is_dir():
        runs = [p for p in run_folders(folder) if (p / "checkpoints" / "best.ckpt").is_file()]
        if runs:
            raise UserError(f"run={run} is the folder of {len(runs)} runs (a sweep); give one of them, e.g. "
                            f"run={runs[0]}")
        raise UserError(f"run={run} is not a dlopt run folder (it has neither .hydra/ nor checkpoints/); give the "
                        "folder of a dlopt train run (outputs/train/DATE/TIME)")
    if not best.is_file():
        command = _command(folder)
        if command == "ensemble":
            return saved_ensemble(folder, f"run={run}")
        if command not in (None, "train"):
            raise UserError(f"run={run} is a run of dlopt {command}, not of dlopt train; give the folder of a dlopt "
                            "train run (outputs/train/DATE/TIME)")
        folds = cross_validation(folder)
        if folds:
            raise UserError(f"run={run} is {folds}; give one, e.g. run={folder / 'folds' / '0'}")
        raise UserError(f"run={run} is not a finished dlopt train run: {best} is missing")
    return SavedRun(best, f"run={run}")


def cross_validation(folder: Path) -> Optional[str]:
    """'a 5-fold cross-validation (data.cv=5) whose networks are its folds, RUN/folds/0..4' for the folder of a
    cross-validation (dlopt.training.crossval), None for any other folder."""
    folds = sorted(int(p.name) for p in (folder / "folds").glob("*") if p.name.isdigit() and is_run_folder(p))
    if not folds or (folder / "checkpoints").exists():
        return None
    return f"a {len(folds)}-fold cross-validation (data.cv) whose networks are its folds, {folder / 'folds'}/" \
           f"{folds[0]}..{folds[-1]}"


def _command(folder: Path) -> Optional[str]:
    """The dlopt command a run folder was made by (tune-lr), None if unknown."""
    job = job_name(folder)
    return job.replace("_", "-") if job else None


def text(path: Path) -> str:
    """A file's text, '' when it cannot be read."""
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return ""


# Hydra's job name and the config groups' options in .hydra/hydra.yaml, found in its text: parsing the whole file
# costs milliseconds a run, too slow to list a thousand
_JOB_NAME = re.compile(r"^  job:\n    name: (\S+)", re.M)
_CHOICES = re.compile(r"^    choices:\n((?:      .*\n)+)", re.M)


def job_name(folder: Path) -> Optional[str]:
    """Hydra's job name of a run folder (train, tune_lr, ...: the dlopt command), None if unknown."""
    found = _JOB_NAME.search(text(folder / ".hydra" / "hydra.yaml"))
    return found.group(1) if found else None


def yaml_data(source: str) -> Any:
    """YAML text as plain data, read with the safe loader (C's when there is one: microseconds for a small file);
    None when it does not parse."""
    import yaml

    try:
        return yaml.load(source, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return None


def choices(folder: Path) -> dict[str, Any]:
    """Each config group's option a run was composed with (model: cnn), from .hydra/hydra.yaml, read as YAML data;
    {} when the file is missing or not Hydra's."""
    block = _CHOICES.search(text(folder / ".hydra" / "hydra.yaml"))
    parsed = yaml_data(block.group(1)) if block else None
    return {str(k): v for k, v in parsed.items() if not str(k).startswith("hydra")} if isinstance(parsed, dict) \
        else {}


_CONFIG_SOURCES = re.compile(r"^    config_sources:\n((?:    [- ] .*\n)+)", re.M)


def config_dirs(folder: Path) -> list[Path]:
    """The folders a run's command line added to its config search path (--config-dir), from .hydra/hydra.yaml."""
    block = _CONFIG_SOURCES.search(text(folder / ".hydra" / "hydra.yaml"))
    sources = yaml_data(block.group(1)) if block else None
    return [Path(s["path"]) for s in sources or [] if isinstance(s, dict) and s.get("provider") == "command-line"
            and isinstance(s.get("path"), str)]


def sweep_overrides(sweep: Path) -> tuple[str, ...]:
    """The overrides a sweep or search was started with (its multirun.yaml); () when it has none."""
    config = yaml_data(text(sweep / "multirun.yaml"))
    task = config.get("hydra", {}).get("overrides", {}).get("task") if isinstance(config, dict) else None
    return tuple(str(o) for o in task) if isinstance(task, list) else ()


def read_checkpoint(path: Path, named: str) -> dict[str, Any]:
    """A dlopt checkpoint (state_dict and the run's config), read with torch.load(weights_only=True)."""
    from dlopt.models.weights import read_weights

    key, _, _ = named.partition("=")
    checkpoint = read_weights(path, key, CHECKPOINT_KINDS)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint \
            or not isinstance(checkpoint.get("dlopt"), dict) or not isinstance(checkpoint["dlopt"].get("config"), dict):
        raise UserError(f"{named}: {path} was not written by dlopt train (it has no saved run config); "
                        f"give {CHECKPOINT_KINDS}")
    return checkpoint


def read_yaml(path: Path, named: str) -> Any:
    """A YAML file of a run folder (.hydra/config.yaml, overrides.yaml) as an OmegaConf container;
    UserError naming the file when it does not parse."""
    try:
        return OmegaConf.load(path)
    except Exception as err:
        reason = " ".join(str(err).split())[:200]
        raise UserError(f"{named}: {path} is not a readable config file ({reason})") from None


def checkpoint_config(checkpoint: dict[str, Any], source: str, allowed: frozenset[str]) -> DictConfig:
    """The run config saved in a checkpoint, checked like every config from a file (see `check_config`)."""
    config = OmegaConf.create(checkpoint["dlopt"]["config"])
    missing = [key for key in RUN_KEYS if key not in config]
    if missing:
        raise UserError(f"{source}: it lacks {', '.join(missing)}, which every run of dlopt train saves; "
                        f"give {CHECKPOINT_KINDS}")
    check_config(config, source, allowed)
    return config


# --- a run folder's records, read without torch -------------------------------------------------------


def is_run_folder(folder: Path) -> bool:
    """A folder a dlopt command ran in: Hydra's .hydra/config.yaml is there."""
    return (folder / ".hydra" / "config.yaml").is_file()


# folders of a run that hold no runs to list with it: a cross-validation's folds (data.cv) are listed as the one run
# they make (dlopt runs RUN/folds lists them)
INSIDE = {".hydra", "tensorboard", "checkpoints", "sample_weights", "folds"}


def run_folders(folder: Path) -> list[Path]:
    """The run folders at and below `folder` (the runs of a sweep, its trials, an ensemble's members), in name
    order (numbers by value)."""
    found = []
    for parent, subfolders, _ in os.walk(folder):
        if is_run_folder(Path(parent)):
            found.append(Path(parent))
        subfolders[:] = [s for s in subfolders if s not in INSIDE and not s.startswith(".")]
    return sorted(found, key=lambda p: [(0, int(part), "") if part.isdigit() else (1, 0, part)
                                        for part in p.relative_to(folder).parts])


def read_json(path: Path, named: str) -> Any:
    """A JSON file of a run folder (metrics.json, history.json); None when it is missing, UserError naming the
    file when it is half-written or not JSON."""
    import json

    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{named}: {path} is not valid JSON ({err}); the run may have been cut short "
                        "while writing it") from None


# metrics.json keys that hold numbers (or null for a value that was not finite), besides every "split/metric"
NUMERIC_METRICS = ("objective", "best_epoch", "epochs", "classes", "params", "flops_per_sample", "seed",
                   "wall_time_s", "process_wall_time_s", "stopped_epoch")


def metrics(folder: Path, named: str) -> Optional[dict[str, Any]]:
    """A run's metrics.json (None when the run wrote none, e.g. it failed); UserError naming the file when it is
    cut short or its values are not what dlopt writes."""
    path = folder / "metrics.json"
    values = read_json(path, named)
    if values is None:
        return None
    if not isinstance(values, dict):
        raise UserError(f"{named}: {path} is not a mapping of metrics")
    wrong = [k for k, v in values.items() if (k in NUMERIC_METRICS or "/" in k)
             and not (v is None or isinstance(v, (int, float)) and not isinstance(v, bool))]
    if wrong:
        raise UserError(f"{named}: {path} is not a metrics file of dlopt: {wrong[0]} is not a number")
    return values


def run_config(folder: Path, named: str, started: bool = False) -> dict[str, Any]:
    """The config a run folder's command ran with, resolved, as plain data: it is read, never built; only the
    resolvers of RESOLVERS run. That is .hydra/config.yaml (how the run started) with the changes of its resumes
    (resumes.json) applied, so a run trained longer says its last trainer.max_epochs; `started`: without them."""
    config = read_yaml(folder / ".hydra" / "config.yaml", named)
    if not isinstance(config, DictConfig):
        raise UserError(f"{named}: {folder / '.hydra' / 'config.yaml'} is not a run config (a mapping of keys)")
    records = [] if started else resumes(folder, named)
    if records:
        config = OmegaConf.create(apply_resumes(OmegaConf.to_container(config, resolve=False), records))
    check_resolvers(config, f"{named}: {folder / '.hydra' / 'config.yaml'}")
    try:
        return OmegaConf.to_container(config, resolve=True)
    except Exception:  # an interpolation of Hydra's own keys, which only the running command knows
        return OmegaConf.to_container(config, resolve=False)


def run_overrides(folder: Path, named: str) -> list[str]:
    """The command-line overrides a run was started with (.hydra/overrides.yaml)."""
    import yaml

    path = folder / ".hydra" / "overrides.yaml"
    try:  # a plain list of strings: the C loader reads it in microseconds, OmegaConf in milliseconds
        overrides = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) \
            if path.is_file() else []
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{named}: {path} is not a readable list of overrides ({' '.join(str(err).split())[:200]})")
    if not isinstance(overrides, (list, type(None))):
        raise UserError(f"{named}: {path} is not a list of overrides")
    return [str(o) for o in overrides or []]


def history(folder: Path, named: str) -> list[dict[str, Any]]:
    """The run's metrics per epoch: history.json (written every epoch), else, for a run of a dlopt that wrote
    none, the history its last checkpoint carries (read with torch, weights_only); [] when there is neither."""
    path, last = folder / "history.json", folder / "checkpoints" / "last.ckpt"
    rows = read_json(path, named)
    if rows is None and last.is_file():
        rows, path = read_checkpoint(last, named)["dlopt"].get("history"), last
    if rows is not None and not (isinstance(rows, list) and all(isinstance(r, dict) and isinstance(r.get("epoch"), int)
                                                                and all(isinstance(v, (int, float, type(None)))
                                                                        for k, v in r.items()) for r in rows)):
        raise UserError(f"{named}: {path} is not a list of epoch rows (epoch and numbers)")
    return rows or []


def flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """{'optimizer.lr': 0.01, ...}: every leaf of a config by its dotted key, an empty mapping too (diagnostics=none
    is {}); values as they are (interpolations unresolved in an unresolved config)."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


RESUMES = "resumes.json"  # a run's continuations, appended by dlopt train resume= (dlopt.training.resumes)


def resumes(folder: Path, named: str) -> list[dict[str, Any]]:
    """The times a run was continued (resumes.json), oldest first, each {"from_epoch": the first epoch it trained,
    "overrides": what its command line added, "changed": {dotted key: {"from": old, "to": new}} (a key the
    continuation added has no "from", one it removed no "to"), "time"}; [] for a run never resumed."""
    path = folder / RESUMES
    rows = read_json(path, named)
    if rows is None:
        return []
    if not (isinstance(rows, list) and all(
            isinstance(r, dict) and isinstance(r.get("from_epoch"), int) and isinstance(r.get("overrides"), list)
            and all(isinstance(o, str) for o in r["overrides"]) and isinstance(r.get("changed", {}), dict)
            and all(isinstance(c, dict) for c in r.get("changed", {}).values()) for r in rows)):
        raise UserError(f"{named}: {path} is not a list of dlopt's resume records (from_epoch, overrides, changed)")
    return rows


def apply_resumes(config: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's config as its last continuation trained it: its .hydra config with each resume's changes applied in
    order (the keys are dotted paths into nested dicts)."""
    import copy

    config = copy.deepcopy(config)
    for record in records:
        for key, change in record.get("changed", {}).items():
            *parents, leaf = key.split(".")
            node = config
            for part in parents:  # a key set makes its parents; a key removed leaves them as they are
                node = (node.setdefault(part, {}) if "to" in change else node.get(part)) if isinstance(node, dict) \
                    else None
            if not isinstance(node, dict):
                continue
            if "to" in change:
                node[leaf] = copy.deepcopy(change["to"])
            else:
                node.pop(leaf, None)
    return config


# --- the allowlist ---------------------------------------------------------------------------------


def allowed_targets(folders: Iterable[Path], composed: Any = None) -> frozenset[str]:
    """The targets a trusted source names: the YAML files under `folders` (the command's config
    folders) and the config `composed` from them and the command line."""
    names = {t for folder in folders if folder.is_dir() for file in folder.rglob("*.yaml")
             for t in _TARGET_LINE.findall(file.read_text(errors="replace"))}
    if composed is not None:
        names.update(target for _, target in _targets(OmegaConf.to_container(composed, resolve=False)))
    return frozenset(names)


def check_config(config: DictConfig, source: str, allowed: frozenset[str]) -> None:
    """Raise UserError if the config read from `source` calls a resolver other than RESOLVERS or names a
    target that is neither in `allowed` nor a class of LIBRARY_CLASSES; check the resolvers first,
    since finding the targets resolves the config."""
    check_resolvers(config, source)
    try:
        resolved = OmegaConf.to_container(config, resolve=True)
    except Exception as err:
        raise UserError(f"{source}: the config does not resolve: {str(err).splitlines()[0]}") from None
    for key, target in _targets(resolved):
        if target not in allowed and not _library_class(target):
            raise UserError(f"{source}: {key}={target} is not a target dlopt builds from a file (only those its "
                            f"config folders name, and the classes of {', '.join(LIBRARY_CLASSES)}); if you "
                            f"trust this file, add --config-dir DIR, a folder whose YAML files name that target")


def check_resolvers(config: DictConfig, source: str) -> None:
    """Raise UserError if the config read from `source` calls a resolver other than RESOLVERS."""
    for key, text in _strings(OmegaConf.to_container(config, resolve=False)):
        for name in _RESOLVER_CALL.findall(text):
            if name not in RESOLVERS:
                raise UserError(f"{source}: {key}={text} calls the resolver {name}, which dlopt does not run from "
                                f"files; a config read back from a file may use {', '.join(RESOLVERS)}")


def _library_class(target: str) -> bool:
    module, _, name = target.rpartition(".")
    if module not in LIBRARY_CLASSES or name.startswith("_"):
        return False
    base_module, _, base_name = LIBRARY_CLASSES[module].rpartition(".")
    value = getattr(importlib.import_module(module), name, None)
    return isinstance(value, type) and issubclass(value, getattr(importlib.import_module(base_module), base_name))


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every value in nested dicts and lists, containers included."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        full = f"{path}.{key}" if path else str(key)
        yield full, value
        yield from _walk(value, full)


def _targets(node: Any) -> Iterator[tuple[str, str]]:
    return ((key, str(value)) for key, value in _walk(node) if key.rpartition(".")[2] == "_target_")


def _strings(node: Any) -> Iterator[tuple[str, str]]:
    return ((key, value) for key, value in _walk(node) if isinstance(value, str))
