"""A linear classifier on the flattened input: multinomial logistic regression (softmax of one
nn.Linear, trained on the cross-entropy like every dlopt model), the first row of a baseline table.
Takes any data kind (vectors, signals, images)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn


class Linear(nn.Module):
    """Flatten -> Linear(num_classes); the Linear is the `head`, as in every dlopt model."""

    def __init__(self, in_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.features = nn.Flatten()
        self.head = nn.Linear(math.prod(int(s) for s in in_shape), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
