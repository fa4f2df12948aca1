"""torchvision's ResNet family (weights=None, never downloaded) adapted to small inputs: a 3x3
stride-1 stem and no max-pool, norm and activation chosen by name, Dropout before the Linear
head. Signals (C, L) run as images (C, 1, L). torchvision's blocks reuse one in-place ReLU and
add the residual in place; the two block subclasses below only rewrite `forward` so each
activation use has its own module and the add is out of place, as Captum needs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torchvision.models as tvm
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from dlopt.errors import UserError
from dlopt.models.layers import (ACTIVATIONS, NORMS, check_choice, check_dropout,
                                 make_activation, make_norm, spatial_shape)

ARCHS = {name: getattr(tvm, name)
         for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")}


class _BasicBlock(BasicBlock):
    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(out)) + identity)


class _Bottleneck(Bottleneck):
    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        return self.act3(self.bn3(self.conv3(out)) + identity)


def _own_activations(block: nn.Module, activation: str) -> None:
    """Swap a torchvision block's shared `relu` for one new activation per use."""
    del block.relu
    basic = isinstance(block, BasicBlock)
    for i in range(1, 3 if basic else 4):
        setattr(block, f"act{i}", make_activation(activation))
    block.__class__ = _BasicBlock if basic else _Bottleneck


class ResNet(nn.Module):
    """A torchvision ResNet (`self.net`) with a small-input stem, named norm and activation."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, arch: str = "resnet18",
                 activation: str = "relu", norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        spatial = spatial_shape("resnet", in_shape)
        check_choice("model.arch", arch, ARCHS)
        check_choice("model.activation", activation, ACTIVATIONS)
        check_choice("model.norm", norm, NORMS)
        check_dropout(dropout)
        final = spatial
        for _ in range(3):  # layer2..layer4 each halve the size (rounding up)
            final = tuple(-(-s // 2) for s in final)
        if norm == "instance" and math.prod(final) == 1:
            raise UserError(f"model.norm=instance needs more than one value per channel, but "
                            f"model=resnet shrinks input {tuple(in_shape)} to size 1; "
                            f"choose one of batch, layer, group, none")
        self.signal = len(spatial) == 1
        net = ARCHS[arch](weights=None, norm_layer=partial(make_norm, norm, dims=2))
        net.conv1 = nn.Conv2d(int(in_shape[0]), 64, 3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.relu = make_activation(activation)
        net.maxpool = nn.Identity()
        for block in [m for m in net.modules() if isinstance(m, (BasicBlock, Bottleneck))]:
            _own_activations(block, activation)
        net.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(net.fc.in_features, num_classes))
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.unsqueeze(2) if self.signal else x)
