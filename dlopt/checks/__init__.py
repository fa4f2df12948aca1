"""Validation of a command's composed config, in one entry point: every app calls `validate(cfg, command)` right after
Hydra composed the config, before anything heavy (torch) is imported and before any file is written.

values.py    type predicates (number, integer) and the value rules, keyed by each knob's full path
training.py  rules across the keys of a run's config (dlopt train, tune-lr, an ensemble's members)
commands.py  the options of the commands that read finished runs (eval, explain, doctor, ensemble, runs)
targets.py   every key is a setting of its `_target_`: imports the targets, so it runs where they are built

Hydra already rejects unknown keys and group options; checks that need the data (a patch larger than the input) stay
where the model or the data is built. A new knob's rule goes in values.RULES under its full path.
"""

from __future__ import annotations

from typing import Collection

from omegaconf import DictConfig

from dlopt.checks.commands import COMMANDS
from dlopt.checks.targets import check_arguments, not_a_setting
from dlopt.checks.training import (REQUIRED_GROUPS, TRANSFER_SOURCES, UNREADABLE, check, not_a_torch_file,
                                   refuse_label_changing, torch_file, transfer_source)
from dlopt.checks.values import CHOICES

# what other modules import from here: the models' and the augmentation's names, the build-time checks
__all__ = ["CHOICES", "REQUIRED_GROUPS", "TRANSFER_SOURCES", "UNREADABLE", "check", "check_arguments",
           "not_a_setting", "not_a_torch_file", "refuse_label_changing", "torch_file", "transfer_source", "validate"]


def validate(cfg: DictConfig, command: str, set_by_user: Collection[str] = (), data: str | None = None) -> None:
    """Raise UserError (one line naming the key, its value and what is valid) for the first rule of `command` (an
    app's config name: train, tune_lr, eval, ...) that cfg breaks. For train: `set_by_user`, the keys the command line
    set, and `data`, the data option's name (an augmentation the data declares label-changing is refused when the
    user set it)."""
    if command in ("train", "tune_lr"):
        check(cfg, set_by_user, data)
    else:
        COMMANDS[command](cfg)
