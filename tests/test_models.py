"""dlopt.models: every model x activation x norm x residual x input kind builds, runs forward and
backward with finite gradients; init, negative_slope, attention and pretrained weights do what
they say; bad knobs raise one-line UserErrors naming the key; no activation module is shared or
in place (Captum needs both); `dlopt train model=vit` and a deep residual attention CNN run.
`model=linear` (multinomial logistic regression on the flattened input, a baseline table's first row)
trains on images, signals and CSV columns, eval and explain take its run, and doctor's remedies fit it."""

from __future__ import annotations

import csv
import json
import logging

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from torch import nn

from dlopt.apps import config_dir
from dlopt.checks import CHOICES, check
from dlopt.diagnostics.remedies import remedies
from dlopt.diagnostics.symptoms import Finding
from dlopt.errors import UserError
from dlopt.hydra_glue import register_resolvers
from dlopt.models import CNN, MLP, ViT, ResNet
from dlopt.models.layers import ACTIVATIONS, NORMS, make_activation, make_norm


MODELS = {"mlp": MLP, "cnn": CNN, "resnet": ResNet, "vit": ViT}
INPUTS = {"digits": (1, 8, 8), "rgb": (3, 16, 16), "signal": (1, 40), "vector": (20,)}
ACT_TYPES = tuple({type(f(0.01)) for f in ACTIVATIONS.values()})
COMBOS = [(a, "batch") for a in ACTIVATIONS] + [("relu", n) for n in NORMS if n != "batch"]
SWEEP = [pytest.param(m, a, n, r, id=f"{m}-{a}-{n}-{'residual' if r else 'plain'}")
         for m in ("mlp", "cnn", "resnet") for a, n in COMBOS for r in (True, False)]
SWEEP += [pytest.param("vit", a, None, None, id=f"vit-{a}") for a in ACTIVATIONS]


def _valid(model: str, norm: str | None, shape: tuple[int, ...]) -> bool:
    if model == "vit":
        return True
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


def _assert_trains(model: nn.Module, shape: tuple[int, ...]) -> None:
    assert _train_step(model, shape).shape == (4, 10)
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("kind", INPUTS)
@pytest.mark.parametrize("name,activation,norm,residual", SWEEP)
def test_forward_backward(name: str, activation: str, norm, residual, kind: str) -> None:
    shape = INPUTS[kind]
    knobs = {"activation": activation}
    knobs |= {} if norm is None else {"norm": norm}
    knobs |= {} if residual is None else {"residual": residual}
    build = lambda: MODELS[name](in_shape=shape, num_classes=10, **knobs)
    if not _valid(name, norm, shape):
        with pytest.raises(UserError):
            build()
        return
    _assert_trains(build(), shape)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16), (1, 40)], ids=str)
@pytest.mark.parametrize("residual", [False, True])
def test_cnn_attention_on_images_and_signals(shape, residual: bool) -> None:
    model = CNN(shape, 10, depth=3, attention=True, residual=residual, heads=4, pool="avg")
    assert sum(isinstance(m, nn.MultiheadAttention) for m in model.modules()) == 1
    _assert_trains(model, shape)


def test_cnn_residual_blocks_and_projection() -> None:
    model = CNN((1, 8, 8), 10, depth=12, width=8, residual=True, norm="none")
    blocks = [m for m in model.features if type(m).__name__ == "ResidualBlock"]
    assert len(blocks) == 12
    assert not isinstance(blocks[0].skip, nn.Identity)  # 1 -> 8 channels
    assert isinstance(blocks[-1].skip, nn.Identity)  # 64 -> 64 after the spatial size reached 1
    _assert_trains(model, (1, 8, 8))


def test_mlp_residual_keeps_depth_linear_layers() -> None:
    plain, res = MLP((20,), 10, depth=6, width=32), MLP((20,), 10, depth=6, width=32, residual=True)
    linears = lambda m: sum(isinstance(x, nn.Linear) for x in m.modules())
    assert linears(plain) == linears(res) == 7
    assert sum(type(m).__name__ == "ResidualLayer" for m in res.modules()) == 5


def test_resnet_without_residual_has_no_skip() -> None:
    model = ResNet((3, 16, 16), 10, residual=False)
    assert not [n for n, _ in model.named_modules() if "downsample" in n]
    assert sum(p.numel() for p in model.parameters()) < sum(
        p.numel() for p in ResNet((3, 16, 16), 10).parameters())


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach().clone() for m in model.modules()
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


BUILDS = {
    "mlp": lambda init: MLP((1, 8, 8), 10, depth=3, init=init),
    "cnn": lambda init: CNN((1, 40), 10, attention=True, residual=True, init=init),
    "resnet": lambda init: ResNet((3, 16, 16), 10, init=init),
    "vit": lambda init: ViT((1, 8, 8), 10, depth=2, init=init),
}


@pytest.mark.parametrize("init", ["kaiming", "xavier", "orthogonal"])
@pytest.mark.parametrize("name", BUILDS)
def test_init_changes_the_weights_deterministically(name: str, init: str) -> None:
    torch.manual_seed(0)
    default = _weights(BUILDS[name]("default"))
    torch.manual_seed(0)
    model = BUILDS[name](init)
    first = _weights(model)
    torch.manual_seed(0)
    again = _weights(BUILDS[name](init))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(not torch.equal(a, b) for a, b in zip(first, default))
    assert all((m.bias == 0).all() for m in model.modules()
               if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) and m.bias is not None)


def test_kaiming_uses_the_activation_and_its_slope() -> None:
    torch.manual_seed(0)
    slope, fan_in = 0.5, 400
    layer = MLP((fan_in,), 10, depth=1, width=2000, activation="leaky_relu",
                negative_slope=slope, init="kaiming").features[1]
    expected = (2 / (1 + slope**2)) ** 0.5 / fan_in**0.5
    assert layer.weight.std().item() == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("name", MODELS)
def test_negative_slope_reaches_leaky_relu(name: str) -> None:
    shape = (1, 8, 8)
    model = MODELS[name](shape, 10, activation="leaky_relu", negative_slope=0.2)
    leaky = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert leaky and {m.negative_slope for m in leaky} == {0.2}


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
    (lambda: MLP((20,), 10, depth=4, activation="silu", residual=True), (20,)),
    (lambda: CNN((1, 40), 10, depth=4, activation="gelu", dropout=0.2), (1, 40)),
    (lambda: CNN((1, 8, 8), 10, depth=5, activation="elu", residual=True, attention=True),
     (1, 8, 8)),
    (lambda: ResNet((3, 16, 16), 10, activation="prelu", dropout=0.1), (3, 16, 16)),
    (lambda: ResNet((3, 16, 16), 10, activation="tanh", residual=False), (3, 16, 16)),
    (lambda: ResNet((1, 40), 10, arch="resnet50", activation="silu"), (1, 40)),
    (lambda: ViT((1, 8, 8), 10, activation="leaky_relu", dropout=0.1), (1, 8, 8)),
    (lambda: ViT((20,), 10, depth=2, activation="relu"), (20,)),
], ids=["mlp", "mlp-residual", "cnn", "cnn-residual-attention", "resnet18", "resnet18-plain",
        "resnet50", "vit", "vit-vector"])
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


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 15, 9), (2, 41), (20,)], ids=str)
def test_vit_tokens_for_every_input_kind(shape) -> None:
    model = ViT(shape, 10, patch=3, heads=2, width=16)
    spatial = shape[1:] if len(shape) > 1 else shape
    tokens = 1
    for s in spatial:
        tokens *= s // 3
    assert model.pos.shape == (1, tokens + 1, 16)
    _assert_trains(model, shape)


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
    assert make_activation("leaky_relu", 0.3).negative_slope == 0.3
    assert tuple(ACTIVATIONS) == CHOICES["activation"] and tuple(NORMS) == CHOICES["norm"]
    assert isinstance(make_norm("batch", 16, 2), nn.BatchNorm2d)
    assert isinstance(make_norm("batch", 16, 0), nn.BatchNorm1d)
    assert isinstance(make_norm("layer", 16, 0), nn.LayerNorm)
    assert make_norm("layer", 16, 1).num_groups == 1
    assert make_norm("group", 12, 2).num_groups == 4
    assert isinstance(make_norm("instance", 16, 1), nn.InstanceNorm1d)
    assert make_norm("instance", 16, 2).affine
    assert isinstance(make_norm("none", 16, 2), nn.Identity)


# --- pretrained weights from a local torchvision file ------------------------------------------


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> str:
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return str(path)


def test_resnet_loads_torchvision_weights(resnet18_file: str, caplog) -> None:
    state = torch.load(resnet18_file, weights_only=True)
    with caplog.at_level(logging.INFO, logger="dlopt.models.resnet"):
        model = ResNet((3, 16, 16), 10, weights=resnet18_file)
    net = model.net
    assert torch.equal(net.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert torch.equal(net.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
    assert torch.equal(net.layer2[0].downsample[0].weight, state["layer2.0.downsample.0.weight"])
    assert net.conv1.weight.shape == (64, 3, 3, 3)
    assert "kept fresh" in caplog.text and "conv1.weight" in caplog.text and "fc.1.weight" in caplog.text
    _assert_trains(model, (3, 16, 16))
    plain = ResNet((1, 40), 10, residual=False, weights=resnet18_file)  # skip projections unused
    assert torch.equal(plain.net.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])


def test_resnet50_weights_into_resnet18_name_the_keys(tmp_path) -> None:
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(UserError) as err:
        ResNet((3, 16, 16), 10, arch="resnet18", weights=str(path))
    message = str(err.value)
    assert "\n" not in message and len(message) < 400
    assert f"model.weights={path}" in message and "model.arch=resnet18" in message
    assert "layer1.0.conv1.weight" in message or "layer1.0.conv3.weight" in message


def test_missing_weights_file_is_named(tmp_path) -> None:
    path = tmp_path / "nowhere" / "resnet18.pth"
    with pytest.raises(UserError, match="no such file") as err:
        ResNet((3, 16, 16), 10, weights=str(path))
    assert str(path) in str(err.value)


def test_weights_need_batch_norm(resnet18_file: str) -> None:
    with pytest.raises(UserError, match="model.weights needs model.norm=batch.*model.norm=group"):
        ResNet((3, 16, 16), 10, norm="group", weights=resnet18_file)


# --- bad inputs -----------------------------------------------------------------------------------


def test_heads_not_dividing_width_is_rejected_at_composition() -> None:
    register_resolvers()  # conf/ calls dlopt's resolvers by name
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        cfg = compose("train", overrides=["model=vit", "model.width=30", "model.heads=4"])
    with pytest.raises(UserError) as err:
        check(cfg)
    assert "model.width=30" in str(err.value) and "model.heads=4" in str(err.value)


ALL_ACTS = "relu, leaky_relu, prelu, sigmoid, tanh, gelu, silu, elu"
NOT_INSTANCE = ["model.norm=instance", "batch, layer, group, none"]
BAD = {
    "mlp-activation": (lambda: MLP((20,), 10, activation="swishy"),
                       ["model.activation=swishy", ALL_ACTS]),
    "resnet-activation": (lambda: ResNet((1, 8, 8), 10, activation="swishy"),
                          ["model.activation=swishy", ALL_ACTS]),
    "vit-activation": (lambda: ViT((1, 8, 8), 10, activation="swishy"),
                       ["model.activation=swishy is not valid; choose one of " + ALL_ACTS]),
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
    "mlp-init": (lambda: MLP((20,), 10, init="he"),
                 ["model.init=he is not valid; choose one of default, kaiming, xavier, orthogonal"]),
    "vit-init": (lambda: ViT((20,), 10, init="uniform"), ["model.init=uniform"]),
    "mlp-negative_slope": (lambda: MLP((20,), 10, negative_slope=-1),
                           ["model.negative_slope=-1 must be >= 0"]),
    "vit-heads": (lambda: ViT((1, 8, 8), 10, width=30, heads=4),
                  ["model.width=30", "model.heads=4"]),
    "vit-patch-image": (lambda: ViT((1, 8, 8), 10, patch=9),
                        ["model.patch=9", "(1, 8, 8)", "model.patch <= 8"]),
    "vit-patch-image-wide": (lambda: ViT((3, 6, 32), 10, patch=7),
                             ["model.patch=7", "(3, 6, 32)", "model.patch <= 6"]),
    "vit-patch-signal": (lambda: ViT((1, 40), 10, patch=41), ["model.patch=41", "<= 40"]),
    "vit-patch-vector": (lambda: ViT((20,), 10, patch=32), ["model.patch=32", "(20,)", "<= 20"]),
    "vit-mlp_ratio": (lambda: ViT((20,), 10, mlp_ratio=0), ["model.mlp_ratio=0 must be >= 1"]),
    "cnn-attention-heads": (lambda: CNN((1, 8, 8), 10, width=6, depth=1, attention=True, heads=4),
                            ["model.heads=4", "6 channels", "model.width=6", "1, 2, 3, 6"]),
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


# --- end to end -----------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [
    ("model=vit",),
    ("model=cnn", "model.depth=12", "model.residual=true", "model.attention=true"),
], ids=["vit", "cnn-deep-residual-attention"])
def test_dlopt_train_runs_the_new_models(cli, tmp_path, overrides) -> None:
    run = cli.train(*overrides, cwd=tmp_path)
    assert (run / "metrics.json").is_file()
    cli.assert_finite(cli.metrics(run))


# --- model=linear: the real command on digits, signals and CSV columns ----------------------------


def metrics(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def linear_digits(cli, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("linear")
    run_dir = cli.train("model=linear", "trainer.max_epochs=5", "trainer.limit_train_batches=null",
                        "trainer.limit_test_batches=null", "optimizer.lr=0.01", cwd=cwd)
    return cwd, run_dir


def test_linear_on_digits_is_one_linear_layer_and_learns(cli, linear_digits):
    _, run_dir = linear_digits
    found = metrics(run_dir)
    assert found["params"] == 8 * 8 * 10 + 10  # weights and biases of one Linear, nothing else
    assert found["epochs"] == 5 and found["test/acc"] > 0.85, found
    assert cli.config(run_dir)["model"]["_target_"] == "dlopt.models.Linear"


def test_eval_and_explain_take_a_linear_run(cli, linear_digits):
    cwd, run_dir = linear_digits
    cli.ok("eval", f"run={run_dir}", cwd=cwd)
    (evaluated,) = cli.run_dirs(cwd, "eval")
    assert metrics(evaluated)["test/acc"] == pytest.approx(metrics(run_dir)["test/acc"], abs=1e-6)
    cli.ok("explain", f"run={run_dir}", "method=[integrated_gradients,permutation]", "explain.samples=4", cwd=cwd)
    (explained,) = cli.run_dirs(cwd, "explain")
    assert (explained / "explain.json").is_file() and (explained / "attributions.png").is_file()


def test_linear_trains_on_signals(cli, tmp_path):
    run_dir = cli.train("data=mnist1d", "model=linear", cwd=tmp_path)
    found = metrics(run_dir)
    assert found["params"] == 40 * 10 + 10  # MNIST-1D: 1 channel x 40 points, 10 classes
    cli.assert_finite(found)


def test_linear_trains_on_csv_columns(cli, tmp_path):
    from sklearn.datasets import load_iris

    iris = load_iris()
    path = tmp_path / "iris.csv"
    with path.open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow([*iris.feature_names, "species"])
        rows.writerows([*x, iris.target_names[y]] for x, y in zip(iris.data, iris.target))
    run_dir = cli.train("data=csv", f"data.path={path}", "data.target=species", "model=linear", cwd=tmp_path)
    found = metrics(run_dir)
    assert found["params"] == 4 * 3 + 3  # 4 columns, 3 classes
    cli.assert_finite(found)


def test_doctor_remedies_for_a_linear_model():
    config = {"model": {"_target_": "dlopt.models.Linear", "compile": False},
              "data": {"_target_": "dlopt.data.sources.digits"}, "optimizer": {"lr": 0.001}}

    def offered(symptom: str) -> list[list[str]]:
        return [r.overrides for r in remedies(Finding(symptom, symptom, "", "", 1.0, ""), config)]

    assert offered("underfitting")[:2] == [["model=mlp"], ["model=cnn"]]
    assert ["regularization=dropout"] not in offered("overfitting")  # a linear model has no dropout to set
