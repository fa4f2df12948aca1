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
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from dlopt.checks import CHOICES
from dlopt.errors import UserError
from dlopt.models.layers import check_knobs, init_weights, make_activation, make_norm, spatial_shape

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


def load_weights(net: nn.Module, path: str, arch: str, residual: bool = True) -> None:
    """Load a torchvision state_dict file into `net`, keeping the adapted stem/head fresh when
    their shapes differ (and leaving out the skip projections without `residual`); any other
    mismatch raises one UserError line."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"model.weights={path}: no such file (a torchvision {arch} state_dict .pth)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"model.weights={path} cannot be read as a state_dict: "
                        f"{str(err).splitlines()[0][:120]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"model.weights={path} is not a state_dict (parameter name -> tensor), "
                        f"e.g. torchvision.models.{arch}().state_dict() saved with torch.save")
    state = {("fc.1." + k[3:] if k in ("fc.weight", "fc.bias") else k): v for k, v in state.items()}
    own = net.state_dict()
    unused = [k for k in state if ".downsample." in k] if not residual else []
    state = {k: v for k, v in state.items() if k not in unused}
    fresh = [k for k in ADAPTED if k not in state or state[k].shape != own[k].shape]
    state = {k: v for k, v in state.items() if k not in fresh}
    kinds = {"shape differs": [k for k in state if k in own and state[k].shape != own[k].shape],
             "missing": [k for k in own if k not in state and k not in fresh],
             "unexpected": [k for k in state if k not in own]}
    if any(kinds.values()):
        first = "; ".join(f"{kind}: {', '.join(keys[:2])}" for kind, keys in kinds.items() if keys)
        raise UserError(f"model.weights={path} does not fit model.arch={arch}: "
                        f"{sum(map(len, kinds.values()))} mismatching keys ({first}, ...)")
    net.load_state_dict(state, strict=False)
    log.info("model.weights=%s: loaded %d tensors; kept fresh (shape differs): %s%s", path,
             len(state), ", ".join(fresh) or "none",
             f"; unused without residual: {len(unused)} skip projection tensors" if unused else "")


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
            load_weights(net, weights, arch, residual)
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.unsqueeze(2) if self.signal else x)
