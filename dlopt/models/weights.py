"""Weight files from elsewhere: read safely and checked against a network by tensor name.

torch.load always runs with weights_only=True, so a file never unpickles code. A file that does
not fit is reported in one line: how many tensors mismatch and the first few, with both shapes.
Used by model.weights (a torchvision ResNet file) and transfer.from (dlopt.training.transfer)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dlopt.checks import UNREADABLE, not_a_torch_file, torch_file
from dlopt.errors import UserError


def read_weights(path: str | Path, key: str, expected: str) -> Any:
    """What torch.load(weights_only=True) finds in the file `key`=path; UserError if it cannot."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"{key}={path}: no such file ({expected})")
    torch_file(file, key, path, expected)
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        text = str(err)
        if "Unsupported global" in text:  # pickled classes or functions: code, never run
            raise UserError(f"{key}={path} holds Python objects besides tensors, which dlopt never "
                            f"unpickles (torch.load weights_only=True); expected {expected}") from None
        # torch's weights-only notice says nothing about a file of the wrong kind
        why = UNREADABLE if not text or "Weights only" in text else text.splitlines()[0].split(". ")[0][:100]
        raise not_a_torch_file(key, path, why, expected) from None


def is_state_dict(obj: Any) -> bool:
    """A non-empty mapping of parameter name -> tensor."""
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def shape_text(t: Tensor) -> str:
    """'128x64' (a scalar: 'scalar')."""
    return "x".join(map(str, t.shape)) or "scalar"


def mismatches(state: Mapping[str, Tensor], own: Mapping[str, Tensor], fresh: Collection[str] = ()) -> list[str]:
    """One description per tensor that keeps `state` from loading into a network whose
    state_dict is `own`: a shape that differs, a name only one of them has. `fresh` names
    tensors of `own` that are deliberately not loaded."""
    found = []
    for name, tensor in own.items():
        if name in state and state[name].shape != tensor.shape:
            found.append(f"{name} (file {shape_text(state[name])}, model {shape_text(tensor)})")
        elif name not in state and name not in fresh:
            found.append(f"{name} (not in the file)")
    return found + [f"{name} (not in the model)" for name in state if name not in own]


def describe_mismatches(problems: list[str], first: int = 3) -> str:
    """'N mismatching tensors: a, b, c, ...'"""
    more = ", ..." if len(problems) > first else ""
    return f"{len(problems)} mismatching tensors: {', '.join(problems[:first])}{more}"
