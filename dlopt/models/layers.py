"""Parts every dlopt model shares: activations and norms chosen by name, the weight init
(`init_weights`, torch.nn.init on every Conv/Linear weight), and the checks for the knobs all
models have (depth, width, dropout, the input kind). The names come from dlopt.checks.CHOICES, the
one torch-free list the config is checked against. Every helper returns a new module per call
and nothing works in place, so Captum can attribute through any model built from them.
Bad values raise UserError with one line naming the key and what would be valid."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence

from torch import nn

from dlopt.checks import CHOICES
from dlopt.errors import UserError

# name -> factory(negative_slope); only leaky_relu uses the slope
ACTIVATIONS: dict[str, Callable[[float], nn.Module]] = {
    "relu": lambda slope: nn.ReLU(),
    "leaky_relu": lambda slope: nn.LeakyReLU(slope),
    "prelu": lambda slope: nn.PReLU(),
    "sigmoid": lambda slope: nn.Sigmoid(),
    "tanh": lambda slope: nn.Tanh(),
    "gelu": lambda slope: nn.GELU(),
    "silu": lambda slope: nn.SiLU(),
    "elu": lambda slope: nn.ELU(),
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
INITS = CHOICES["init"]
assert tuple(ACTIVATIONS) == CHOICES["activation"] and tuple(NORMS) == CHOICES["norm"]

# activation -> (nonlinearity, param) for nn.init.calculate_gain; ReLU-like ones count as relu,
# prelu as leaky_relu with PReLU's initial slope 0.25 (leaky_relu: its negative_slope)
_GAINS = {"relu": ("relu", None), "prelu": ("leaky_relu", 0.25), "sigmoid": ("sigmoid", None),
          "tanh": ("tanh", None), "gelu": ("relu", None), "silu": ("relu", None),
          "elu": ("relu", None)}


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


def check_knobs(**knobs: object) -> None:
    """The shared knobs a model was given: depth/width/heads/... >= 1, activation, norm and init
    among the known names, dropout a probability."""
    for key, value in knobs.items():
        if key in CHOICES:
            check_choice(f"model.{key}", value, CHOICES[key])
        elif key == "dropout":
            check_dropout(value)  # type: ignore[arg-type]
        elif key == "negative_slope":
            if value < 0:  # type: ignore[operator]
                raise UserError(f"model.negative_slope={value} must be >= 0")
        else:
            check_positive(f"model.{key}", value)  # type: ignore[arg-type]


def make_activation(name: str, negative_slope: float = 0.01) -> nn.Module:
    """A new activation module (never shared, never in place)."""
    check_choice("model.activation", name, ACTIVATIONS)
    return ACTIVATIONS[name](negative_slope)


def init_weights(model: nn.Module, init: str, activation: str = "relu",
                 negative_slope: float = 0.01) -> None:
    """Re-initialize every Conv/Linear weight (and attention input projection) with nn.init,
    biases to zero; `default` keeps PyTorch's init. kaiming, xavier and orthogonal all use the
    gain torch gives the activation (leaky_relu: with a=negative_slope)."""
    check_choice("model.init", init, INITS)
    if init == "default":
        return
    nonlinearity, param = (("leaky_relu", negative_slope) if activation == "leaky_relu"
                           else _GAINS[activation])
    gain = nn.init.calculate_gain(nonlinearity, param)
    weights, biases = [], []
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            weights.append(m.weight)
            biases.append(m.bias)
        elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
            weights.append(m.in_proj_weight)
            biases.append(m.in_proj_bias)
    for weight in weights:
        if init == "kaiming":
            nn.init.kaiming_normal_(weight, a=param or 0, nonlinearity=nonlinearity)
        elif init == "xavier":
            nn.init.xavier_uniform_(weight, gain=gain)
        else:
            nn.init.orthogonal_(weight, gain=gain)
    for bias in biases:
        if bias is not None:
            nn.init.zeros_(bias)


def make_norm(name: str, channels: int, dims: int) -> nn.Module:
    """A new norm over `channels` features for vectors (dims=0), signals (1) or images (2)."""
    check_choice("model.norm", name, NORMS)
    if dims not in (0, 1, 2):
        raise ValueError(f"dims must be 0, 1 or 2, not {dims}")
    return NORMS[name](channels, dims)
