"""Checks of a config node against the objects it builds: every key is a setting its `_target_` takes. They import
the targets, so they run where the objects are built (dlopt.training.run), not with the value rules."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from omegaconf import DictConfig
from typing_extensions import Unpack

from dlopt.errors import UserError, did_you_mean

# keys of a target's node that dlopt reads itself instead of passing them to the target
OWN_KEYS = {"model.compile", "scheduler.warmup_epochs", "data.bootstrap", "data.sample_weights", "data.fold",
            "data.label_changing"}


def check_arguments(node: DictConfig, path: str) -> None:
    """Each object the config node at `path` builds takes every key given to it: `+model.foo=1` is one
    line naming model.foo and the model's settings instead of a TypeError from inside the build.
    Imports the targets, so it runs where they are built."""

    from hydra.utils import get_object

    for key in node:
        value = node.get(key)
        if isinstance(value, DictConfig):
            check_arguments(value, f"{path}.{key}")
    target = node.get("_target_")
    if target is None:
        return
    try:
        built = get_object(str(target))
        parameters = inspect.signature(built).parameters
    except Exception as err:
        raise UserError(f"{path}._target_={target} cannot be built: {str(err).splitlines()[0]}") from None
    settings = [name for name, p in parameters.items() if p.default is not inspect.Parameter.empty]
    passed_on = [p for p in parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    if passed_on:
        keys = typed_keywords(built, passed_on[0].name)
        if keys is None:  # **kwargs of any name
            return
        settings += keys
    unknown = [str(k) for k in node if not str(k).startswith("_") and k not in parameters and k not in settings
               and f"{path}.{k}" not in OWN_KEYS]
    if unknown:
        raise not_a_setting(node, path, unknown[0], settings)


def typed_keywords(function: Any, name: str) -> list[str] | None:
    """The keys `**name` of `function` takes when it is annotated `**name: Unpack[SomeTypedDict]` (PEP 692: a data
    source's **loader, which it passes on to its DataModule), else None."""
    annotation = inspect.get_annotations(function).get(name)  # text, in a module with `from __future__ import annotations`
    if annotation is None:
        return None
    only = types.SimpleNamespace(__annotations__={name: annotation})  # the others may name what is imported later
    hint = typing.get_type_hints(only, globalns=function.__globals__, include_extras=True)[name]
    if typing.get_origin(hint) is not Unpack:
        return None
    return list(typing.get_args(hint)[0].__annotations__)


def not_a_setting(node: DictConfig, path: str, key: str, settings: list[str]) -> UserError:
    """The error for a key given to the target of the node at `path` that the target does not take."""
    return UserError(f"{path}.{key} is not a setting of {path} ({node.get('_target_')}){did_you_mean(key, settings)}; "
                     f"its settings are {', '.join(settings)}")
