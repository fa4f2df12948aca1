"""Parts every dlopt model shares: activations and norms chosen by name, and the checks for the
knobs all models have (depth, width, dropout, the input kind). Every helper returns a new module
per call and nothing works in place, so Captum can attribute through any model built from them.
Bad values raise UserError with one line naming the key and what would be valid."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence

from torch import nn

from dlopt.errors import UserError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
}


def _instance(channels: int, dims: int) -> nn.Module:
    if dims == 0:
        raise UserError("model.norm=instance needs images or signals, not vectors; "
                        "choose one of batch, layer, group, none")
    return (nn.InstanceNorm1d, nn.InstanceNorm2d)[dims - 1](channels, affine=True)


# name -> factory(channels, dims); dims is 0 for vector features, 1 for signals, 2 for images.
NORMS: dict[str, Callable[[int, int], nn.Module]] = {
    "batch": lambda c, dims: (nn.BatchNorm1d, nn.BatchNorm1d, nn.BatchNorm2d)[dims](c),
    "layer": lambda c, dims: nn.LayerNorm(c) if dims == 0 else nn.GroupNorm(1, c),
    "group": lambda c, dims: nn.GroupNorm(math.gcd(8, c), c),
    "instance": _instance,
    "none": lambda c, dims: nn.Identity(),
}


def check_choice(key: str, value: object, valid: Collection[str]) -> None:
    """Raise UserError unless value is one of the valid names."""
    if not isinstance(value, str) or value not in valid:
        raise UserError(f"{key}={value} is not valid; choose one of {', '.join(valid)}")


def check_positive(key: str, value: int) -> None:
    """Raise UserError unless value >= 1."""
    if value < 1:
        raise UserError(f"{key}={value} must be >= 1")


def check_dropout(value: float) -> None:
    """Raise UserError unless 0 <= value < 1."""
    if not 0 <= value < 1:
        raise UserError(f"model.dropout={value} must be in [0, 1)")


def spatial_shape(model: str, in_shape: Sequence[int]) -> tuple[int, ...]:
    """The spatial part of a signal (C, L) or image (C, H, W) shape; anything else raises."""
    shape = tuple(int(s) for s in in_shape)
    if len(shape) not in (2, 3):
        hint = ": use model=mlp" if len(shape) == 1 else ""
        kind = "vectors" if len(shape) == 1 else "inputs"
        raise UserError(f"model={model} needs images (C,H,W) or signals (C,L); "
                        f"the data gives {kind} of shape {shape}{hint}")
    return shape[1:]


def make_activation(name: str) -> nn.Module:
    """A new activation module (never shared, never in place)."""
    check_choice("model.activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


def make_norm(name: str, channels: int, dims: int) -> nn.Module:
    """A new norm over `channels` features for vectors (dims=0), signals (1) or images (2)."""
    check_choice("model.norm", name, NORMS)
    if dims not in (0, 1, 2):
        raise ValueError(f"dims must be 0, 1 or 2, not {dims}")
    return NORMS[name](channels, dims)
