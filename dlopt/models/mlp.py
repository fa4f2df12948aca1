"""Fully connected classifier on the flattened input, so it takes any data kind (vectors,
signals, images). `depth` hidden layers of Linear -> norm -> activation -> Dropout, then a
Linear head. Written by hand because torchvision.ops.MLP also puts Dropout after the output
layer, i.e. on the logits."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from dlopt.models.layers import (ACTIVATIONS, NORMS, check_choice, check_dropout,
                                 check_positive, make_activation, make_norm)


class MLP(nn.Module):
    """Flatten -> depth x (Linear, norm, activation, Dropout) -> Linear(num_classes)."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, depth: int = 2,
                 width: int = 128, activation: str = "relu", norm: str = "none",
                 dropout: float = 0.0) -> None:
        super().__init__()
        check_positive("model.depth", depth)
        check_positive("model.width", width)
        check_choice("model.activation", activation, ACTIVATIONS)
        check_choice("model.norm", norm, NORMS)
        check_dropout(dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        features = math.prod(int(s) for s in in_shape)
        for _ in range(depth):
            layers += [nn.Linear(features, width), make_norm(norm, width, dims=0),
                       make_activation(activation), nn.Dropout(dropout)]
            features = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
