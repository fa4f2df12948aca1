"""Convolutional classifier for images (Conv2d) and 1-D signals (Conv1d): `depth` blocks of
size-keeping conv -> norm -> activation (or, with `residual`, conv-norm-act-conv-norm plus a skip,
then activation), each followed by a 2x pooling while the spatial size is still >= 2 (so deep
stacks work on 8x8 digits), channels doubling at each downsampling up to 8 x width; optionally one
self-attention block (nn.MultiheadAttention) over the spatial positions; head is global average
pooling -> Dropout -> Linear. Hand-written because no maintained library offers a small conv
stack that switches between 1-D and 2-D inputs and turns skips and attention on by one knob."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from dlopt.errors import UserError
from dlopt.models.layers import check_knobs, init_weights, make_activation, make_norm, spatial_shape


class ResidualBlock(nn.Module):
    """conv-norm-act-conv-norm, plus the input (through a 1x1 conv + norm when the channel count
    changes), then the activation; the add is out of place."""

    def __init__(self, conv: type[nn.Module], channels_in: int, channels: int, kernel_size: int,
                 norm: str, dims: int, activation: str, negative_slope: float) -> None:
        super().__init__()
        bias = norm == "none"
        self.body = nn.Sequential(
            conv(channels_in, channels, kernel_size, padding="same", bias=bias),
            make_norm(norm, channels, dims), make_activation(activation, negative_slope),
            conv(channels, channels, kernel_size, padding="same", bias=bias),
            make_norm(norm, channels, dims))
        self.skip = nn.Identity() if channels_in == channels else nn.Sequential(
            conv(channels_in, channels, 1, bias=bias), make_norm(norm, channels, dims))
        self.act = make_activation(activation, negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        out = out + self.skip(x)
        return self.act(out)


class SpatialAttention(nn.Module):
    """x + MultiheadAttention(LayerNorm(x)) over the positions of a (N, C, *spatial) map."""

    def __init__(self, channels: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, dropout=dropout, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        tokens = x.flatten(2).transpose(1, 2)  # (N, positions, C)
        normed = self.norm(tokens)
        attended, _ = self.attn(normed, normed, normed, need_weights=False)
        return (tokens + attended).transpose(1, 2).reshape(x.shape)


class CNN(nn.Module):
    """depth x (conv block, [pool]) -> [attention] -> AdaptiveAvgPool -> Dropout -> Linear."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, depth: int = 3,
                 width: int = 32, kernel_size: int = 3, pool: str = "max",
                 activation: str = "relu", negative_slope: float = 0.01, norm: str = "batch",
                 residual: bool = False, attention: bool = False, heads: int = 4,
                 dropout: float = 0.0, init: str = "default") -> None:
        super().__init__()
        spatial = list(spatial_shape("cnn", in_shape))
        check_knobs(depth=depth, width=width, kernel_size=kernel_size, heads=heads, pool=pool,
                    activation=activation, negative_slope=negative_slope, norm=norm,
                    dropout=dropout, init=init)
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
            if residual:
                layers.append(ResidualBlock(conv, channels_in, channels, kernel_size, norm, dims,
                                            activation, negative_slope))
            else:
                layers += [conv(channels_in, channels, kernel_size, padding="same",
                                bias=norm == "none"),
                           make_norm(norm, channels, dims),
                           make_activation(activation, negative_slope)]
            channels_in = channels
            if pool != "none" and min(spatial) >= 2:
                layers.append(pools[pool][dims - 1](2, 2))
                spatial = [s // 2 for s in spatial]
                channels = min(2 * channels, 8 * width)
        if attention:
            if channels_in % heads:
                valid = [d for d in range(1, channels_in + 1) if channels_in % d == 0][:8]
                raise UserError(f"model.heads={heads} must divide the {channels_in} channels at "
                                f"the end of the conv stack (model.width={width}, "
                                f"model.depth={depth}); choose one of {', '.join(map(str, valid))}")
            layers.append(SpatialAttention(channels_in, heads, dropout))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential((nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)[dims - 1](1),
                                  nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(channels_in, num_classes))
        init_weights(self, init, activation, negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
