"""torchvision's ResNet family (never downloaded) adapted to small inputs: a 3x3 stride-1 stem and
no max-pool, norm and activation chosen by name, Dropout before the Linear head, optionally
torchvision's pretrained weights from a local file. Signals (C, L) run as images (C, 1, L).
torchvision's blocks reuse one in-place ReLU and add the residual in place; the two block
subclasses below only rewrite `forward` so each activation use has its own module, the add is
out of place (as Captum needs) and `residual=false` can drop it."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import partial

import torchvision.models as tvm
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from dlopt.checks import CHOICES
from dlopt.errors import UserError
from dlopt.models.layers import check_knobs, init_weights, make_activation, make_norm, spatial_shape
from dlopt.models.weights import describe_mismatches, is_state_dict, mismatches, read_weights

log = logging.getLogger(__name__)
ARCHS = {name: getattr(tvm, name) for name in CHOICES["arch"]}
ADAPTED = ("conv1.weight", "fc.1.weight", "fc.1.bias")  # stem and head differ from torchvision's


class _BasicBlock(BasicBlock):
    residual: bool

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.act2(out)


class _Bottleneck(Bottleneck):
    residual: bool

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.act3(out)


def _adapt_block(block: nn.Module, activation: str, negative_slope: float, residual: bool) -> None:
    """Swap a torchvision block's shared `relu` for one new activation per use; without
    `residual` the skip (and its projection) goes."""
    del block.relu
    basic = isinstance(block, BasicBlock)
    for i in range(1, 3 if basic else 4):
        setattr(block, f"act{i}", make_activation(activation, negative_slope))
    block.__class__ = _BasicBlock if basic else _Bottleneck
    block.residual = residual
    if not residual:
        block.downsample = None


def from_torchvision(state: dict[str, Tensor], own: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str], int]:
    """A torchvision ResNet state_dict renamed for the network whose state_dict is `own` (`fc` ->
    `fc.1`); without the adapted stem and head where their shapes differ (they stay fresh: the
    second value) and without skip projections `own` lacks (residual=false: their count is the third)."""
    state = {("fc.1." + k[3:] if k in ("fc.weight", "fc.bias") else k): v for k, v in state.items()}
    fresh = [k for k in ADAPTED if k not in state or state[k].shape != own[k].shape]
    unused = [k for k in state if ".downsample." in k and k not in own]
    return {k: v for k, v in state.items() if k not in fresh and k not in unused}, fresh, len(unused)


def load_weights(net: nn.Module, path: str, arch: str) -> None:
    """Load a torchvision state_dict file into `net` (see from_torchvision); any other mismatch
    raises one UserError line."""
    state = read_weights(path, "model.weights", f"a torchvision {arch} state_dict .pth")
    if not is_state_dict(state):
        raise UserError(f"model.weights={path} is not a state_dict (parameter name -> tensor), "
                        f"e.g. torchvision.models.{arch}().state_dict() saved with torch.save")
    own = net.state_dict()
    state, fresh, unused = from_torchvision(state, own)
    problems = mismatches(state, own, fresh)
    if problems:
        raise UserError(f"model.weights={path} does not fit model.arch={arch}: {describe_mismatches(problems)}")
    net.load_state_dict(state, strict=False)
    log.info("model.weights=%s: loaded %d tensors; kept fresh (shape differs): %s%s", path,
             len(state), ", ".join(fresh) or "none",
             f"; unused without residual: {unused} skip projection tensors" if unused else "")


class ResNet(nn.Module):
    """A torchvision ResNet (`self.net`) with a small-input stem, named norm and activation."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, arch: str = "resnet18",
                 activation: str = "relu", negative_slope: float = 0.01, norm: str = "batch",
                 residual: bool = True, dropout: float = 0.0, init: str = "default",
                 weights: str | None = None) -> None:
        super().__init__()
        spatial = spatial_shape("resnet", in_shape)
        check_knobs(arch=arch, activation=activation, negative_slope=negative_slope, norm=norm,
                    dropout=dropout, init=init)
        if weights is not None and norm != "batch":
            raise UserError(f"model.weights needs model.norm=batch (the file holds BatchNorm "
                            f"weights), not model.norm={norm}")
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
        net.relu = make_activation(activation, negative_slope)
        net.maxpool = nn.Identity()
        for block in [m for m in net.modules() if isinstance(m, (BasicBlock, Bottleneck))]:
            _adapt_block(block, activation, negative_slope, residual)
        net.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(net.fc.in_features, num_classes))
        init_weights(net, init, activation, negative_slope)
        if weights is not None:
            load_weights(net, weights, arch)
        self.net = net

    @property
    def head(self) -> nn.Module:
        """The classification layer (torchvision's `fc`), under the name every dlopt model gives it."""
        return self.net.fc

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.unsqueeze(2) if self.signal else x)
