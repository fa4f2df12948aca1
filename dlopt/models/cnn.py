"""Plain convolutional classifier for images (Conv2d) and 1-D signals (Conv1d): `depth` blocks
of size-keeping conv -> norm -> activation, each followed by a 2x pooling while the spatial size
is still >= 2 (so deep stacks work on 8x8 digits), channels doubling at each downsampling up to
8 x width; head is global average pooling -> Dropout -> Linear. Hand-written because no
maintained library offers a small conv stack that switches between 1-D and 2-D inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from dlopt.errors import UserError
from dlopt.models.layers import (ACTIVATIONS, NORMS, check_choice, check_dropout,
                                 check_positive, make_activation, make_norm, spatial_shape)

POOLS = ("max", "avg", "none")


class CNN(nn.Module):
    """depth x (conv, norm, activation, [pool]) -> AdaptiveAvgPool -> Dropout -> Linear."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, depth: int = 3,
                 width: int = 32, kernel_size: int = 3, pool: str = "max",
                 activation: str = "relu", norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        spatial = list(spatial_shape("cnn", in_shape))
        for key, value in (("depth", depth), ("width", width), ("kernel_size", kernel_size)):
            check_positive(f"model.{key}", value)
        check_choice("model.pool", pool, POOLS)
        check_choice("model.activation", activation, ACTIVATIONS)
        check_choice("model.norm", norm, NORMS)
        check_dropout(dropout)
        dims = len(spatial)
        conv = (nn.Conv1d, nn.Conv2d)[dims - 1]
        pools = {"max": (nn.MaxPool1d, nn.MaxPool2d), "avg": (nn.AvgPool1d, nn.AvgPool2d)}
        layers: list[nn.Module] = []
        channels_in, channels = int(in_shape[0]), width
        for block in range(1, depth + 1):
            if norm == "instance" and math.prod(spatial) == 1:
                raise UserError(f"model.norm=instance needs more than one value per channel, but "
                                f"input {tuple(in_shape)} shrinks to size 1 at block {block}; "
                                f"lower model.depth or choose one of batch, layer, group, none")
            layers += [conv(channels_in, channels, kernel_size, padding="same",
                            bias=norm == "none"),
                       make_norm(norm, channels, dims), make_activation(activation)]
            channels_in = channels
            if pool != "none" and min(spatial) >= 2:
                layers.append(pools[pool][dims - 1](2, 2))
                spatial = [s // 2 for s in spatial]
                channels = min(2 * channels, 8 * width)
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential((nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)[dims - 1](1),
                                  nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(channels_in, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
