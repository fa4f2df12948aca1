"""Fully connected classifier on the flattened input, so it takes any data kind (vectors,
signals, images). `depth` hidden layers of Linear -> norm -> activation -> Dropout, then a
Linear head; with `residual`, the first layer maps to `width` and the other depth-1 are
residual blocks x + f(x). Written by hand because torchvision.ops.MLP also puts Dropout after
the output layer, i.e. on the logits, and has no skips."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from dlopt.models.layers import check_knobs, init_weights, make_activation, make_norm


class ResidualLayer(nn.Module):
    """x + f(x) with f one hidden layer (Linear, norm, activation, Dropout); the add is out of place."""

    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, x: Tensor) -> Tensor:
        return x + self.f(x)


class MLP(nn.Module):
    """Flatten -> depth x (Linear, norm, activation, Dropout) [with skips] -> Linear(num_classes)."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, depth: int = 2,
                 width: int = 128, activation: str = "relu", negative_slope: float = 0.01,
                 norm: str = "none", residual: bool = False, dropout: float = 0.0,
                 init: str = "default") -> None:
        super().__init__()
        check_knobs(depth=depth, width=width, activation=activation, negative_slope=negative_slope,
                    norm=norm, dropout=dropout, init=init)
        layers: list[nn.Module] = [nn.Flatten()]
        features = math.prod(int(s) for s in in_shape)
        for layer in range(depth):
            hidden = nn.Sequential(nn.Linear(features, width), make_norm(norm, width, dims=0),
                                   make_activation(activation, negative_slope), nn.Dropout(dropout))
            layers += [ResidualLayer(hidden)] if residual and layer > 0 else list(hidden)
            features = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(features, num_classes)
        init_weights(self, init, activation, negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
