"""Output folders: every command gets a folder of its own, and a command that fails leaves none behind.

conf/hydra/dlopt.yaml asks for outputs/COMMAND/DATE/TIME as `${dlopt.fresh:PATH}`. Resolving it creates nothing:
`fresh` only names the folder (PATH, or the first of PATH_1, PATH_2, ... that does not exist), so `--cfg hydra
--resolve` leaves nothing behind. `FreshFolders`, a Hydra callback of the same file, claims it when the run or the
sweep starts: Hydra calls it after composing the config and before it resolves hydra.run.dir or hydra.sweep.dir to
create the folder. `claim` makes it with os.mkdir, which succeeds for exactly one of two commands started in the same
second; the other takes TIME_1 (then _2, ...). From then on the resolver gives the claimed folder, and OmegaConf
caches it in the config like Hydra's `${now:}`, so every later look at the folder, in this process and in the
configs Hydra copies for a sweep's jobs (other processes too), sees the same one. Only Hydra and the standard library
here.
"""

from __future__ import annotations

import itertools
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dlopt.errors import UserError, os_error_message

# what Hydra writes into a folder before a job writes anything: its config, a sweep's config (and logs)
HYDRA_FILES = {".hydra", "multirun.yaml"}

_created: list[Path] = []  # folders this process created, parents first
_named: dict[str, str] = {}  # a folder `fresh` named -> the PATH it was asked for
_claimed: dict[str, str] = {}  # PATH -> the folder claimed for it
_refused: dict[str, UserError] = {}  # PATH -> why no folder could be claimed for it


def _candidates(path: str) -> Iterator[Path]:
    """PATH, PATH_1, PATH_2, ..."""
    base = Path(path)
    return (base if n == 0 else base.with_name(f"{base.name}_{n}") for n in itertools.count())


def fresh(path: str) -> str:
    """The `${dlopt.fresh:PATH}` resolver: the folder claimed for PATH, else the first of PATH, PATH_1, ... that does
    not exist, which nothing creates. Raises why, when FreshFolders could not claim one."""
    if path in _refused:
        raise _refused[path]
    if path in _claimed:
        return _claimed[path]
    name = str(next(folder for folder in _candidates(path) if not folder.exists()))
    _named[name] = path
    return name


def claim(path: str) -> str:
    """PATH, or PATH_1, PATH_2, ...: the first of them that did not exist, created now."""
    for folder in _candidates(path):
        try:
            make(folder.parent)
            folder.mkdir()
        except FileExistsError as err:
            if not folder.is_dir():
                raise UserError(os_error_message(err)) from None
            continue
        except FileNotFoundError:  # another command removed an empty parent between the two steps
            continue
        except OSError as err:
            raise UserError(os_error_message(err)) from None
        _created.append(folder)
        return str(folder)


class FreshFolders(Callback):
    """conf/hydra/dlopt.yaml's callback: claims the folder `${dlopt.fresh:PATH}` named, when the run or sweep starts."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _claim_named(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _claim_named(config, "hydra.sweep.dir")


def _claim_named(config: DictConfig, key: str) -> None:
    """Claim the folder `key` names, if `fresh` named it; then the config resolves `key` to the claimed folder. Hydra
    turns what a callback raises into a warning: a folder that cannot be claimed is raised by `fresh` when Hydra
    resolves `key` next, where Hydra's own errors are raised."""
    try:
        name = str(OmegaConf.select(config, key))
    except Exception:  # (trainer=nodes without a run id) Hydra meets it again when it makes the folder, and says so
        return
    path = _named.get(name)
    if path is None:  # a folder the user named (hydra.run.dir=DIR), or one every machine of a run shares
        return
    try:
        _claimed[path] = claim(path)
    except UserError as err:
        _refused[path] = err
    cache = OmegaConf.get_cache(config)  # the name `fresh` gave before the claim: forgotten
    OmegaConf.set_cache(config, defaultdict(dict, {k: v for k, v in cache.items() if k != "dlopt.fresh"}))
    if path in _claimed:
        OmegaConf.select(config, key)  # cached again: the sweep's jobs copy the cache


def claimed(folder) -> bool:
    """True if this process claimed `folder`, or a folder holding it, as its own (`claim`; a sweep's run folders):
    no other process writes into it."""
    folder = Path(folder).resolve()
    return not {folder, *folder.parents}.isdisjoint(p.resolve() for p in _created)


def make(folder: Path) -> None:
    """mkdir -p that remembers which folders it created, for `discard`."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    _created.extend(p for p in missing if p not in _created)


def only_hydra_files(folder: Path) -> bool:
    """True if `folder` holds nothing but what Hydra writes before a job does (config, job logs) and
    empty folders (made ready for checkpoints)."""
    return folder.is_dir() and all(p.name in HYDRA_FILES or p.suffix == ".log" or p.is_dir() and not any(p.iterdir())
                                   for p in folder.iterdir())


def discard() -> None:
    """Remove the folders this process created that hold nothing but Hydra's own files (a run that
    failed before writing a result, a sweep folder with only multirun.yaml), and then the parents it
    created that are left empty. Folders other commands created are never touched."""
    for folder in reversed(_created):
        if only_hydra_files(folder):  # empty ones too
            shutil.rmtree(folder, ignore_errors=True)
