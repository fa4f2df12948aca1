"""Tests of dlopt.checks (validate, check and the value rules) on configs composed by Hydra from the real config
tree."""

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from dlopt.apps import config_dir
from dlopt.checks import check
from dlopt.errors import UserError
from dlopt.hydra_glue import register_resolvers


def composed(*overrides):
    register_resolvers()  # conf/ calls dlopt's resolvers by name
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return compose("train", overrides=list(overrides))


def rejected(*overrides) -> str:
    cfg = composed(*overrides)
    with pytest.raises(UserError) as err:
        check(cfg)
    message = str(err.value)
    assert "\n" not in message and len(message) < 300  # one line, no traceback
    return message


def test_default_config_is_accepted():
    check(composed())


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=mlp"],
        ["model=resnet"],
        ["model=vit"],
        ["model=vit", "model.width=48", "model.heads=6", "model.patch=4", "model.mlp_ratio=1"],
        ["model=cnn", "model.residual=true", "model.attention=true", "model.pool=avg"],
        ["model=cnn", "model.width=6", "model.attention=true"],  # heads vs channels: at build
        ["model=mlp", "model.residual=true", "model.init=kaiming", "model.activation=leaky_relu",
         "model.negative_slope=0.2"],
        ["model=resnet", "model.residual=false", "model.init=orthogonal", "model.arch=resnet34"],
        ["optimizer=sgd"],
        ["optimizer=momentum"],
        ["optimizer=adamw"],
        ["optimizer=rmsprop"],
        ["scheduler=none"],
        ["scheduler=step"],
        ["scheduler=exponential"],
        ["scheduler=plateau"],
        ["regularization=none"],
        ["regularization=dropout"],
        ["regularization=l1"],
        ["regularization=l2"],
        ["regularization=strong"],
        ["regularization.exclude_norm_bias=true", "regularization.label_smoothing=0.1"],
        ["augmentation=none"],
        ["augmentation=light"],
        ["augmentation=standard"],
        ["augmentation=strong"],
        ["augmentation=randaugment"],
        ["augmentation=mixup"],
        ["augmentation=cutmix"],
        ["augmentation=strong", "augmentation.resized_crop=[0.6,1.0]", "augmentation.color_jitter=0.2",
         "augmentation.policy=trivialaugment", "augmentation.mixup_alpha=0.2", "augmentation.cutmix_alpha=1.0"],
        ["data=mnist1d"],
        ["data=synthetic"],
        ["experiment=example"],
        ["mode=max", "monitor=val/acc"],
        ["optimizer.lr=1e-5", "regularization.dropout=0.0", "data.batch_size=1"],
    ],
    ids=lambda o: " ".join(o),
)
def test_every_shipped_option_is_accepted(overrides):
    check(composed(*overrides))


@pytest.mark.parametrize(
    "override, key, value, valid",
    [
        ("optimizer.lr=0", "optimizer.lr", "0", "> 0"),
        ("optimizer.lr=-0.1", "optimizer.lr", "-0.1", "> 0"),
        ("optimizer.lr=abc", "optimizer.lr", "abc", "> 0"),
        ("regularization.dropout=1.0", "regularization.dropout", "1.0", "[0, 1)"),
        ("regularization.dropout=-0.2", "regularization.dropout", "-0.2", "[0, 1)"),
        ("data.batch_size=0", "data.batch_size", "0", ">= 1"),
        ("data.batch_size=2.5", "data.batch_size", "2.5", "an integer"),
        ("model.depth=0", "model.depth", "0", ">= 1"),
        ("model.width=0", "model.width", "0", ">= 1"),
        ("regularization.weight_decay=-1", "regularization.weight_decay", "-1", ">= 0"),
        ("regularization.l1=-0.5", "regularization.l1", "-0.5", ">= 0"),
        ("mode=sideways", "mode", "sideways", "min or max"),
        ("data.normalize=zscore", "data.normalize", "zscore", "standardize, minmax or none"),
        ("trainer.max_epochs=0", "trainer.max_epochs", "0", ">= 1"),
        ("trainer.max_epochs=-1", "trainer.max_epochs", "-1", ">= 1"),
        ("callbacks.early_stopping.patience=-1", "callbacks.early_stopping.patience", "-1", ">= 0"),
        ("data.val_fraction=1.0", "data.val_fraction", "1.0", "(0, 1)"),
        ("seed=1.5", "seed", "1.5", "an integer"),
        ("model.heads=0", "model.heads", "0", ">= 1"),
        ("model.negative_slope=-0.1", "model.negative_slope", "-0.1", ">= 0"),
        ("model.residual=yes", "model.residual", "yes", "true or false"),
        ("model.attention=1", "model.attention", "1", "true or false"),
        ("model.activation=swishy", "model.activation", "swishy",
         "; choose one of relu, leaky_relu, prelu, sigmoid, tanh, gelu, silu, elu"),
        ("model.norm=weird", "model.norm", "weird", "batch, layer, group, instance, none"),
        ("model.pool=min", "model.pool", "min", "max, avg, none"),
        ("model.init=he", "model.init", "he", "default, kaiming, xavier, orthogonal"),
    ],
)
def test_bad_values_name_the_key_the_value_and_the_valid_range(override, key, value, valid):
    message = rejected(override)
    assert message.startswith(f"{key}={value} ")
    assert valid in message


@pytest.mark.parametrize(
    "override, key",
    [
        ("optimizer.lr=true", "optimizer.lr"),
        ("regularization.dropout=false", "regularization.dropout"),
        ("data.batch_size=true", "data.batch_size"),
        ("model.depth=true", "model.depth"),
        ("regularization.weight_decay=false", "regularization.weight_decay"),
    ],
)
def test_a_bool_where_a_number_is_expected_is_rejected(override, key):
    assert rejected(override).startswith(f"{key}=")


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["optimizer=momentum", "optimizer.momentum=1.0"], "optimizer.momentum"),
        (["scheduler=step", "scheduler.gamma=0"], "scheduler.gamma"),
        (["scheduler=plateau", "scheduler.factor=1.0"], "scheduler.factor"),
        (["augmentation=light", "augmentation.hflip_p=1.5"], "augmentation.hflip_p"),
        (["augmentation=light", "augmentation.crop_padding=-1"], "augmentation.crop_padding"),
        (["augmentation=standard", "augmentation.rotate_deg=-1"], "augmentation.rotate_deg"),
        (["augmentation=strong", "augmentation.scale=[1.2,0.9]"], "augmentation.scale"),
        (["augmentation=strong", "augmentation.erasing_p=1.5"], "augmentation.erasing_p"),
        (["augmentation=randaugment", "augmentation.policy=foo"], "augmentation.policy"),
        (["augmentation=mixup", "augmentation.mixup_alpha=-1"], "augmentation.mixup_alpha"),
        (["augmentation=cutmix", "augmentation.cutmix_alpha=-1"], "augmentation.cutmix_alpha"),
        (["regularization=strong", "regularization.label_smoothing=1.0"], "regularization.label_smoothing"),
        (["regularization=strong", "regularization.exclude_norm_bias=maybe"], "regularization.exclude_norm_bias"),
        (["model=vit", "model.patch=0"], "model.patch"),
        (["model=vit", "model.mlp_ratio=1.5"], "model.mlp_ratio"),
        (["model=vit", "model.activation=swish"], "model.activation"),
        (["model=resnet", "model.arch=resnet9"], "model.arch"),
        (["model=resnet", "model.residual=no"], "model.residual"),
        (["model=mlp", "model.init=uniform"], "model.init"),
    ],
)
def test_group_options_knobs_are_checked_under_their_own_group(overrides, key):
    assert rejected(*overrides).startswith(f"{key}=")


def test_an_interpolated_key_is_reported_where_the_user_set_it():
    cfg = composed("regularization.dropout=1.0")
    assert cfg.model.dropout == 1.0  # model.dropout: ${regularization.dropout}
    message = rejected("regularization.dropout=1.0")
    assert message.startswith("regularization.dropout=1.0 ")
    assert "model.dropout" not in message


def test_a_key_set_directly_is_reported_under_its_own_name():
    message = rejected("model.dropout=1.0")
    assert message.startswith("model.dropout=1.0 ")


def test_the_first_bad_key_is_named_even_when_others_are_fine():
    message = rejected("optimizer.lr=0.01", "model.width=-3")
    assert message.startswith("model.width=-3 ")


def test_an_interpolation_that_does_not_resolve_is_a_user_error():
    message = rejected("model.dropout=${regularization.nothing}")
    assert "does not resolve" in message


def test_heads_must_divide_width_and_both_keys_are_named():
    message = rejected("model=vit", "model.width=30", "model.heads=4")
    assert message.startswith("model.width=30 ") and "model.heads=4" in message


def test_choices_are_the_names_the_models_build():
    from dlopt.checks import CHOICES
    from dlopt.models.layers import ACTIVATIONS, INITS, NORMS
    from dlopt.models.resnet import ARCHS

    assert tuple(ACTIVATIONS) == CHOICES["activation"] and tuple(NORMS) == CHOICES["norm"]
    assert INITS == CHOICES["init"] and tuple(ARCHS) == CHOICES["arch"]


# --- the entry point, rules keyed by path ----------------------------------------------------------------------------


def test_every_command_validates_through_one_entry_point():
    from dlopt.checks import validate

    validate(composed(), "train")
    register_resolvers()  # conf/ calls dlopt's resolvers by name
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        for command, overrides, needle in (("eval", ["split=train"], "split=train is not valid"),
                                           ("explain", ["method=lime", "explain.samples=0"], "explain.samples=0 "),
                                           ("doctor", ["remedies=0"], "remedies=0 is not valid"),
                                           ("runs", ["format=xml"], "format=xml is not valid"),
                                           ("tune_lr", ["lr_find.num_training=1"], "lr_find.num_training=1 ")):
            with pytest.raises(UserError, match=f"^{re.escape(needle)}"):
                validate(compose(command, overrides=overrides), command)


def test_every_rule_names_a_knob_of_the_shipped_config():
    """RULES is keyed by full paths: each (but a `*` pattern) is a key that a file of conf/ sets."""
    from dlopt.checks.values import RULES

    keys = set()
    root = Path(config_dir())
    for path in root.rglob("*.yaml"):
        where = path.relative_to(root).parts
        if where[0] != "hydra":
            top = len(where) == 1 or path.read_text().startswith("# @package _global_")
            keys |= set(_paths(OmegaConf.load(path), "" if top else where[0]))
    unknown = [key for key in RULES if "*" not in key and key not in keys]
    assert not unknown, unknown


def _paths(node, path=""):
    for key in node:
        full = f"{path}.{key}" if path else str(key)
        if OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key) \
                or not isinstance(node[key], DictConfig):
            yield full
        else:
            yield from _paths(node[key], full)


def test_a_new_knob_does_not_inherit_a_rule_of_another_by_its_name():
    from dlopt.checks.values import rule_of

    assert rule_of("augmentation.scale") is not None and rule_of("model.scale") is None
    assert rule_of("scheduler.factor") is not None and rule_of("model.factor") is None
    check(composed("+model.scale=[2,1]"))  # not augmentation.scale's rule (the model's build refuses an unknown key)


def test_a_wildcard_rule_is_shared_on_purpose():
    from dlopt.checks.values import rule_of

    assert rule_of("diagnostics.thresholds.dead") is rule_of("diagnostics.thresholds.anything_new")
    assert rejected("diagnostics.thresholds.dead=-1").startswith("diagnostics.thresholds.dead=-1 is not valid")


def test_label_changing_is_one_rule_of_the_run_config():
    cfg = composed("augmentation.hflip_p=0.5")
    check(cfg)  # a preset's or unknown origin: the augmentation's builder skips it
    with pytest.raises(UserError, match=r"^augmentation\.hflip_p=0\.5 refused: data=digits lists it"):
        check(cfg, set_by_user=["augmentation.hflip_p"], data="digits")
    with pytest.raises(UserError, match=r"^data\.label_changing=\['flips'\] is not valid"):
        check(composed("data.label_changing=[flips]"))


def test_one_number_predicate():
    from dlopt.checks.values import number

    assert number(1) and number(1.5) and number(float("nan")) and not number(True) and not number("1")
    assert not number(float("inf"), finite=True) and number(-2.0, finite=True)
