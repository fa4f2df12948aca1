"""Tests of the regularization group and the data knobs that shape the training loss (class
weights, class subsets, fractions): tiny real fits on the CPU, configs composed by Hydra from the
real config tree, and the real `dlopt` command once for a bad data.classes."""

import math

import lightning.pytorch as L
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import nn

from dlopt.apps import config_dir
from dlopt.checks import check
from dlopt.data.augment import build_augment
from dlopt.data.datamodule import InMemoryDataModule, balanced_weights
from dlopt.errors import UserError, cause_of
from dlopt.hydra_glue import register_resolvers
from dlopt.training.module import Classifier
from dlopt.training.run import build

PRESETS = ("none", "l1", "l2", "dropout", "strong")
QUIET = ["trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "trainer.enable_model_summary=false"]


def composed(*overrides):
    register_resolvers()  # conf/ calls dlopt's resolvers by name
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return compose("train", overrides=[*QUIET, *overrides])


def tiny_trainer(**kw):
    return L.Trainer(**{"max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 1, "logger": False,
                        "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
                        "accelerator": "cpu", **kw})


def optimizer_of(module):
    made = module.configure_optimizers()
    return made["optimizer"] if isinstance(made, dict) else made


def dropouts(net):
    return [m.p for m in net.modules() if isinstance(m, nn.Dropout)]


def weight_l1(module):
    return sum(p.detach().abs().sum().item() for p in module.parameters() if p.dim() > 1)


# weight decay, exclude_norm_bias, adam vs adamw


@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "adam"])
def test_exclude_norm_bias_puts_biases_and_norm_weights_in_an_undecayed_group(optimizer):
    cfg = composed(f"optimizer={optimizer}", "model=cnn", "regularization.weight_decay=0.01",
                   "regularization.exclude_norm_bias=true")
    data, module = build(cfg)
    trainer = tiny_trainer()
    trainer.fit(module, datamodule=data)
    groups = trainer.optimizers[0].param_groups
    assert len(groups) == 2
    decayed, plain = ({id(p) for p in g["params"]} for g in groups)
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    params = list(module.parameters())
    assert decayed == {id(p) for p in params if p.dim() > 1}
    assert plain == {id(p) for p in params if p.dim() <= 1}
    norms = [m for m in module.net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms  # the cnn has batch norm, so the rule is exercised on real norm weights
    for norm in norms:
        assert id(norm.weight) in plain and id(norm.bias) in plain
    convs = [m for m in module.net.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(id(c.weight) in decayed for c in convs)
    assert all(c.bias is None or id(c.bias) in plain for c in convs)


def test_without_exclude_norm_bias_every_parameter_is_decayed_in_one_group():
    data, module = build(composed("optimizer=adamw", "regularization.weight_decay=0.01"))
    trainer = tiny_trainer()
    trainer.fit(module, datamodule=data)
    groups = trainer.optimizers[0].param_groups
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.01
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in module.parameters()}


def test_regularization_l2_reaches_the_optimizer():
    data, module = build(composed("regularization=l2"))
    trainer = tiny_trainer()
    trainer.fit(module, datamodule=data)
    assert [g["weight_decay"] for g in trainer.optimizers[0].param_groups] == [0.0005]


def zero_gradient_step(*overrides):
    """Parameters before and after one optimizer step with zero loss gradients: only weight decay moves them."""
    _, module = build(composed("scheduler=none", "optimizer.lr=0.1", "regularization.weight_decay=0.5", *overrides))
    optimizer = optimizer_of(module)
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    for p in module.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    return optimizer, before, dict(module.named_parameters())


def test_adamw_decays_the_weights_decoupled_and_spares_biases_and_norms():
    optimizer, before, after = zero_gradient_step("optimizer=adamw", "regularization.exclude_norm_bias=true")
    assert type(optimizer) is torch.optim.AdamW
    for name, p in after.items():
        if p.dim() > 1:  # decoupled: w <- w * (1 - lr * wd), no Adam rescaling
            torch.testing.assert_close(p.detach(), before[name] * (1 - 0.1 * 0.5), rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(p.detach(), before[name]), name


def test_adam_adds_weight_decay_to_the_gradient():
    optimizer, before, after = zero_gradient_step("optimizer=adam")
    assert type(optimizer) is torch.optim.Adam
    assert optimizer.param_groups[0]["weight_decay"] == 0.5
    assert not optimizer.param_groups[0].get("decoupled_weight_decay", False)
    # coupled: the gradient becomes wd * w and Adam normalizes it, a step of lr * sign(w)
    name, w = next((n, p) for n, p in after.items() if p.dim() > 1)
    moved = before[name] - w.detach()
    nonzero = before[name].abs() > 1e-3
    torch.testing.assert_close(moved[nonzero], 0.1 * before[name][nonzero].sign(), rtol=1e-3, atol=1e-4)


# l1


def test_l1_is_logged_and_shrinks_the_weights():
    def fit(l1):
        data, module = build(composed("model=mlp", "model.width=32", "scheduler=none", "optimizer.lr=0.01",
                                      f"regularization.l1={l1}"))
        start = weight_l1(module)
        trainer = tiny_trainer(limit_train_batches=8)
        trainer.fit(module, datamodule=data)
        return start, weight_l1(module), module.history

    start, plain, plain_history = fit(0.0)
    start_l1, shrunk, history = fit(0.001)
    assert start == start_l1  # same seed, same initial weights
    assert shrunk < plain * 0.97
    assert "train/l1" not in plain_history[0]
    logged = history[0]["train/l1"]  # the mean penalty over the epoch's steps
    assert math.isfinite(logged) and 0.001 * shrunk * 0.99 <= logged <= 0.001 * start * 1.01


# dropout


@pytest.mark.parametrize("model, extra", [("mlp", []), ("cnn", ["model.attention=true"]), ("resnet", []), ("vit", [])])
def test_regularization_dropout_reaches_every_model(model, extra):
    _, module = build(composed(f"model={model}", *extra, "regularization.dropout=0.3"))
    found = dropouts(module.net)
    assert found and all(p == 0.3 for p in found), found
    for attention in (m for m in module.net.modules() if isinstance(m, nn.MultiheadAttention)):
        assert attention.dropout == 0.3
    _, plain = build(composed(f"model={model}", *extra))
    assert all(p == 0.0 for p in dropouts(plain.net))


def test_dropout_is_active_in_training_only():
    data, module = build(composed("model=mlp", "regularization=dropout"))
    assert dropouts(module.net) and set(dropouts(module.net)) == {0.3}
    x, _ = data.train_samples(16)
    module.train()
    assert not torch.equal(module(x), module(x))
    module.eval()
    assert torch.equal(module(x), module(x))


# label smoothing and class weights: training loss only


def test_label_smoothing_changes_the_training_loss_but_not_the_validation_loss():
    data, smooth = build(composed("model=mlp", "regularization.label_smoothing=0.2"))
    _, plain = build(composed("model=mlp"))
    for a, b in zip(smooth.parameters(), plain.parameters()):
        assert torch.equal(a, b)  # identical weights
    x, y = data.train_samples(32)
    with torch.no_grad():
        logits = plain(x)
        train_smooth, train_plain = smooth._step((x, y), "train"), plain._step((x, y), "train")
        val_smooth, val_plain = smooth._step((x, y), "val"), plain._step((x, y), "val")
    assert not torch.isclose(train_smooth, train_plain)
    torch.testing.assert_close(train_smooth, F.cross_entropy(logits, y, label_smoothing=0.2))
    torch.testing.assert_close(train_plain, F.cross_entropy(logits, y))
    assert torch.equal(val_smooth, val_plain)
    torch.testing.assert_close(val_smooth, F.cross_entropy(logits, y))


def imbalanced(counts=(20, 5, 10), features=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    x = torch.randn(len(y), features, generator=g) + y[:, None].float()
    return x, y


def test_balanced_class_weights_are_n_over_k_times_count():
    counts = (20, 5, 10)
    x, y = imbalanced(counts)
    dm = InMemoryDataModule(x, y, x[:6], y[:6], x[:6], y[:6], classes=list("abc"), class_weights="balanced")
    n, k = sum(counts), len(counts)
    expected = torch.tensor([n / (k * c) for c in counts])
    torch.testing.assert_close(dm.class_weights, expected)
    torch.testing.assert_close((dm.class_weights * torch.tensor(counts, dtype=torch.float)).sum(), torch.tensor(float(n)))
    assert InMemoryDataModule(x, y, x, y, x, y, classes=list("abc")).class_weights is None


def test_the_training_loss_uses_the_class_weights_and_the_validation_loss_does_not():
    x, y = imbalanced()
    dm = InMemoryDataModule(x, y, x, y, x, y, classes=list("abc"), class_weights="balanced", normalize="none")
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    module = Classifier(net, lambda params, weight_decay: torch.optim.SGD(params, lr=0.1, weight_decay=weight_decay),
                        num_classes=3, input_shift=dm.shift, input_scale=dm.scale, class_weights=dm.class_weights)
    with torch.no_grad():
        logits = net(x)
        train, val = module._step((x, y), "train"), module._step((x, y), "val")
    torch.testing.assert_close(train, F.cross_entropy(logits, y, weight=dm.class_weights))
    torch.testing.assert_close(val, F.cross_entropy(logits, y))
    assert not torch.isclose(train, val)
    tiny_trainer(limit_train_batches=None, limit_val_batches=None).fit(module, datamodule=dm)  # trains with them
    assert math.isfinite(module.history[0]["train/loss"])


def test_class_weights_balanced_reach_the_module_from_the_config():
    data, module = build(composed("data.class_weights=balanced", "data.fraction=0.5"))
    labels = data.splits["train"][1]
    counts = torch.bincount(labels, minlength=10).float()
    torch.testing.assert_close(module.class_weights, len(labels) / (10 * counts))
    assert build(composed())[1].class_weights is None


def test_balanced_weights_need_every_class_in_training():
    with pytest.raises(UserError, match=r"data\.class_weights=balanced") as err:
        balanced_weights(torch.tensor([0, 0, 2, 2]), 4)
    assert "[1, 3]" in str(err.value)


# soft labels


def test_soft_labels_train_and_accuracy_counts_the_most_probable_class():
    torch.manual_seed(0)
    x, y = imbalanced((12, 12, 12))
    net = nn.Linear(4, 3)
    module = Classifier(net, lambda params, weight_decay: torch.optim.SGD(params, lr=0.1, weight_decay=weight_decay),
                        num_classes=3, input_shift=torch.zeros(4), input_scale=torch.ones(4))
    soft = 0.7 * F.one_hot(y, 3).float() + 0.3 * F.one_hot(y.roll(1, 0), 3).float()
    with torch.no_grad():
        logits = net(x)
        loss = module._step((x, soft), "train")
    torch.testing.assert_close(loss, F.cross_entropy(logits, soft))
    accuracy = module.scores["train_"].compute()["acc"]
    torch.testing.assert_close(accuracy, (logits.argmax(1) == soft.argmax(1)).float().mean())

    # and a real fit with mixup making them
    dm = InMemoryDataModule(x, y, x, y, x, y, classes=list("abc"), batch_size=12)
    dm.augment = build_augment((4,), num_classes=3, mixup_alpha=0.4)
    module = Classifier(nn.Linear(4, 3), lambda params, weight_decay: torch.optim.SGD(params, lr=0.1),
                        num_classes=3, input_shift=dm.shift, input_scale=dm.scale, label_smoothing=0.1,
                        class_weights=torch.tensor([1.0, 2.0, 0.5]))
    tiny_trainer(max_epochs=2, limit_train_batches=None, limit_val_batches=None).fit(module, datamodule=dm)
    for row in module.history:
        assert math.isfinite(row["train/loss"]) and 0 <= row["train/acc"] <= 1 and math.isfinite(row["val/loss"])


# presets and bad values


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_passes_the_checks_and_builds(preset):
    cfg = composed(f"regularization={preset}")
    check(cfg)
    _, module = build(cfg)
    reg = cfg.regularization
    assert module.weight_decay == reg.weight_decay and module.l1 == reg.l1
    assert module.exclude_norm_bias == reg.exclude_norm_bias and module.label_smoothing == reg.label_smoothing
    assert set(dropouts(module.net)) == {reg.dropout}
    assert len(optimizer_of(module).param_groups) == (2 if reg.exclude_norm_bias and reg.weight_decay else 1)


def test_the_strong_preset_switches_on_decay_exclusion_dropout_and_smoothing():
    _, module = build(composed("regularization=strong"))
    assert module.weight_decay > 0 and module.exclude_norm_bias is True
    assert module.label_smoothing > 0
    assert dropouts(module.net) and all(p > 0 for p in dropouts(module.net))
    groups = optimizer_of(module).param_groups
    assert [g["weight_decay"] for g in groups] == [module.weight_decay, 0.0]


@pytest.mark.parametrize(
    "override, valid",
    [
        ("regularization.label_smoothing=1.0", "[0, 1)"),
        ("regularization.label_smoothing=-0.1", "[0, 1)"),
        ("regularization.exclude_norm_bias=maybe", "true or false"),
        ("regularization.exclude_norm_bias=1", "true or false"),
        ("regularization.weight_decay=-1", ">= 0"),
        ("regularization.l1=-0.1", ">= 0"),
        ("regularization.dropout=1.0", "[0, 1)"),
        ("data.fraction=0", "(0, 1]"),
        ("data.fraction=1.5", "(0, 1]"),
        ("data.class_weights=inverse", "none, balanced"),
    ],
)
def test_bad_values_name_the_key(override, valid):
    key, value = override.split("=")
    with pytest.raises(UserError) as err:
        check(composed(override))
    message = str(err.value)
    assert message.startswith(f"{key}={value}") and valid in message and "\n" not in message


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.classes=[0,12]", "12 is not a class of data=digits; its classes are 0, 1, 2, 3, 4, 5, 6, 7, 8, 9"),
        ("data.classes=[3]", "fewer than 2 classes"),
        ("data.fraction=0.002", "data.fraction=0.002"),
        ("data.class_weights=inverse", "data.class_weights=inverse"),
    ],
)
def test_bad_data_knobs_are_user_errors_where_the_data_is_built(override, expected):
    with pytest.raises(Exception) as err:
        build(composed(override))  # without dlopt.checks: the data source itself refuses
    user_error = cause_of(err.value, UserError)  # what the command reports (Hydra's instantiate wraps it)
    assert user_error is not None, err.value
    assert expected in str(user_error) and "\n" not in str(user_error)


def test_data_classes_keep_and_relabel_the_chosen_classes():
    data, module = build(composed("data.classes=[3,5,7]", "model=mlp"))
    assert data.classes == ["3", "5", "7"] and data.num_classes == 3
    assert set(data.splits["train"][1].tolist()) == {0, 1, 2}
    assert module.net(torch.zeros(2, *data.in_shape)).shape == (2, 3)


def test_an_unknown_class_exits_2_in_one_line_and_leaves_no_run(in_process, tmp_path):
    result = in_process.run("train", *in_process.TINY, "data.classes=[0,12]", cwd=tmp_path)
    assert result.returncode == 2, result.describe()
    assert "Traceback" not in result.output, result.describe()
    lines = [line for line in result.output.splitlines() if "data.classes" in line]
    assert len(lines) == 1, result.describe()
    assert "12 is not a class" in lines[0] and "0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in lines[0]
    assert in_process.run_dirs(tmp_path) == []
