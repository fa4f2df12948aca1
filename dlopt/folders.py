"""Output folders: every command gets a folder of its own, and a command that fails leaves none behind.

`claim` backs the `${dlopt.fresh:PATH}` resolver of conf/hydra/dlopt.yaml: two commands started
in the same second both ask for outputs/train/DATE/TIME; os.mkdir succeeds for exactly one of
them, and the other takes TIME_1 (then _2, ...). The resolver is cached like Hydra's `${now:}`,
so every later look at hydra.run.dir or hydra.sweep.dir in this process (and in the configs
Hydra copies for a sweep's jobs) sees the same folder. Only Hydra and the standard library here.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

from dlopt.errors import UserError, os_error_message

# what Hydra writes into a folder before a job writes anything: its config, a sweep's config (and logs)
HYDRA_FILES = {".hydra", "multirun.yaml"}

_created: list[Path] = []  # folders this process created, parents first


def claim(path: str) -> str:
    """PATH, or PATH_1, PATH_2, ...: the first of them that did not exist, created now."""
    base = Path(path)
    for n in itertools.count():
        folder = base if n == 0 else base.with_name(f"{base.name}_{n}")
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
