"""dlopt.models: every model x activation x norm x input kind builds, runs forward and backward
with finite gradients; bad knobs raise one-line UserErrors naming the key; no activation module
is shared or in place (Captum needs both)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlopt.errors import UserError
from dlopt.models import CNN, MLP, ResNet
from dlopt.models.layers import ACTIVATIONS, NORMS, make_activation, make_norm

torch.set_num_threads(2)

MODELS = {"mlp": MLP, "cnn": CNN, "resnet": ResNet}
INPUTS = {"digits": (1, 8, 8), "rgb": (3, 16, 16), "signal": (1, 40), "vector": (20,)}
ACT_TYPES = tuple({type(f()) for f in ACTIVATIONS.values()})
COMBOS = [(a, "batch") for a in ACTIVATIONS] + [("relu", n) for n in NORMS if n != "batch"]


def _valid(model: str, norm: str, shape: tuple[int, ...]) -> bool:
    if model == "mlp":
        return norm != "instance"
    if len(shape) == 1:
        return False
    return not (model == "resnet" and norm == "instance" and shape == (1, 8, 8))


def _train_step(model: nn.Module, shape: tuple[int, ...], batch: int = 4) -> torch.Tensor:
    torch.manual_seed(0)
    logits = model(torch.randn(batch, *shape))
    nn.functional.cross_entropy(logits, torch.arange(batch) % 10).backward()
    return logits


@pytest.mark.parametrize("kind", INPUTS)
@pytest.mark.parametrize("activation,norm", COMBOS)
@pytest.mark.parametrize("name", MODELS)
def test_forward_backward(name: str, activation: str, norm: str, kind: str) -> None:
    shape = INPUTS[kind]
    build = lambda: MODELS[name](in_shape=shape, num_classes=10, activation=activation, norm=norm)
    if not _valid(name, norm, shape):
        with pytest.raises(UserError):
            build()
        return
    model = build()
    logits = _train_step(model, shape)
    assert logits.shape == (4, 10)
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


def _activation_uses(model: nn.Module, shape: tuple[int, ...]) -> dict[int, int]:
    calls = {id(m): 0 for m in model.modules() if isinstance(m, ACT_TYPES)}

    def count(module: nn.Module, *_: object) -> None:
        calls[id(module)] += 1

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, ACT_TYPES)]
    model(torch.randn(2, *shape))
    for h in hooks:
        h.remove()
    return calls


@pytest.mark.parametrize("build,shape", [
    (lambda: MLP((1, 8, 8), 10, depth=3, activation="prelu", norm="layer", dropout=0.1), (1, 8, 8)),
    (lambda: CNN((1, 40), 10, depth=4, activation="gelu", dropout=0.2), (1, 40)),
    (lambda: ResNet((3, 16, 16), 10, activation="prelu", dropout=0.1), (3, 16, 16)),
    (lambda: ResNet((1, 40), 10, arch="resnet50", activation="silu"), (1, 40)),
], ids=["mlp", "cnn", "resnet18", "resnet50"])
def test_one_activation_module_per_use_and_nothing_inplace(build, shape) -> None:
    model = build()
    assert not [n for n, m in model.named_modules() if getattr(m, "inplace", False)]
    modules = [m for _, m in model.named_modules(remove_duplicate=False)]
    acts = [id(m) for m in modules if isinstance(m, ACT_TYPES)]
    assert acts and len(acts) == len(set(acts))
    assert set(_activation_uses(model, shape).values()) == {1}


def test_resnet34_and_signal_shapes() -> None:
    assert ResNet((3, 16, 16), 7, arch="resnet34")(torch.randn(2, 3, 16, 16)).shape == (2, 7)
    model = ResNet((2, 40), 10, norm="instance")
    assert model.net.conv1.in_channels == 2 and isinstance(model.net.maxpool, nn.Identity)
    assert _train_step(model, (2, 40)).shape == (4, 10)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("pool", ["max", "avg", "none"])
def test_cnn_deep_on_digits_and_channel_cap(pool: str) -> None:
    model = CNN((1, 8, 8), 10, depth=6, width=4, kernel_size=4, pool=pool)
    assert _train_step(model, (1, 8, 8)).shape == (4, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    pools = [m for m in model.modules() if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    assert len(convs) == 6 and len(pools) == (0 if pool == "none" else 3)  # 8 -> 4 -> 2 -> 1
    assert max(c.out_channels for c in convs) == (4 if pool == "none" else 32)
    assert isinstance(CNN((1, 40), 10).features[0], nn.Conv1d)


def test_layers_helpers() -> None:
    assert make_activation("relu") is not make_activation("relu")
    assert isinstance(make_norm("batch", 16, 2), nn.BatchNorm2d)
    assert isinstance(make_norm("batch", 16, 0), nn.BatchNorm1d)
    assert isinstance(make_norm("layer", 16, 0), nn.LayerNorm)
    assert make_norm("layer", 16, 1).num_groups == 1
    assert make_norm("group", 12, 2).num_groups == 4
    assert isinstance(make_norm("instance", 16, 1), nn.InstanceNorm1d)
    assert make_norm("instance", 16, 2).affine
    assert isinstance(make_norm("none", 16, 2), nn.Identity)


ALL_ACTS = "relu, leaky_relu, prelu, sigmoid, tanh, gelu, silu, elu"
NOT_INSTANCE = ["model.norm=instance", "batch, layer, group, none"]
BAD = {
    "mlp-activation": (lambda: MLP((20,), 10, activation="swishy"),
                       ["model.activation=swishy", ALL_ACTS]),
    "resnet-activation": (lambda: ResNet((1, 8, 8), 10, activation="swishy"),
                          ["model.activation=swishy", ALL_ACTS]),
    "cnn-norm": (lambda: CNN((1, 8, 8), 10, norm="weird"),
                 ["model.norm=weird", "batch, layer, group, instance, none"]),
    "mlp-instance": (lambda: MLP((20,), 10, norm="instance"), NOT_INSTANCE),
    "resnet-instance-1x1": (lambda: ResNet((1, 8, 8), 10, norm="instance"), NOT_INSTANCE),
    "cnn-instance-1x1": (lambda: CNN((1, 8, 8), 10, depth=4, norm="instance"),
                         NOT_INSTANCE + ["model.depth"]),
    "mlp-depth": (lambda: MLP((20,), 10, depth=0), ["model.depth=0 must be >= 1"]),
    "cnn-depth": (lambda: CNN((1, 8, 8), 10, depth=0), ["model.depth=0 must be >= 1"]),
    "mlp-width": (lambda: MLP((20,), 10, width=0), ["model.width=0 must be >= 1"]),
    "cnn-width": (lambda: CNN((1, 8, 8), 10, width=0), ["model.width=0 must be >= 1"]),
    "cnn-kernel_size": (lambda: CNN((1, 8, 8), 10, kernel_size=0),
                        ["model.kernel_size=0 must be >= 1"]),
    "mlp-dropout": (lambda: MLP((20,), 10, dropout=1.5), ["model.dropout=1.5 must be in [0, 1)"]),
    "cnn-dropout": (lambda: CNN((1, 8, 8), 10, dropout=-0.1),
                    ["model.dropout=-0.1 must be in [0, 1)"]),
    "resnet-dropout": (lambda: ResNet((1, 8, 8), 10, dropout=1.0),
                       ["model.dropout=1.0 must be in [0, 1)"]),
    "cnn-vectors": (lambda: CNN((20,), 10),
                    ["model=cnn needs images (C,H,W) or signals (C,L); "
                     "the data gives vectors of shape (20,): use model=mlp"]),
    "resnet-vectors": (lambda: ResNet((20,), 10),
                       ["model=resnet", "vectors of shape (20,)", "use model=mlp"]),
    "resnet-arch": (lambda: ResNet((1, 8, 8), 10, arch="resnet9"),
                    ["model.arch=resnet9", "resnet18, resnet34, resnet50, resnet101, resnet152"]),
    "cnn-pool": (lambda: CNN((1, 8, 8), 10, pool="min"), ["model.pool=min", "max, avg, none"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_raises_one_line_user_error(case: str) -> None:
    build, expected = BAD[case]
    with pytest.raises(UserError) as err:
        build()
    message = str(err.value)
    assert "\n" not in message
    for text in expected:
        assert text in message
