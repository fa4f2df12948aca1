"""Value rules: what each knob of a composed config may hold, keyed by the knob's full path.

Hydra already rejects unknown keys and unknown group options. What it cannot know is that `optimizer.lr` must be a
positive number or `regularization.dropout` a probability below 1. RULES names every knob by its full path
(`scheduler.factor` and `clip.factor` are two knobs); a `*` stands for one path segment where a rule is meant to be
shared (`diagnostics.thresholds.*`), so a new knob never inherits a stranger's rule by its name. Named choices
(activation, norm, ...) are listed here, torch-free, in CHOICES: dlopt.models builds its tables from these names, so
there is one list. The type predicates (number, integer) are the ones the rest of dlopt uses too.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, NamedTuple

from omegaconf import DictConfig, ListConfig, OmegaConf

from dlopt import threads
from dlopt.errors import UserError


def number(x: Any, finite: bool = False) -> bool:
    """An int or a float, not a bool (True is an int to Python); with `finite`, not inf or nan either."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and (not finite or math.isfinite(x))


def integer(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_integer(key: str, value: Any, least: int | None = None) -> None:
    """UserError naming `key` unless `value` is an integer (>= least): a count or a seed of a command's options."""
    if not integer(value) or (least is not None and value < least):
        raise UserError(f"{key}={value} is not valid: expected an integer" + (f" >= {least}" if least is not None
                                                                                else ""))


def _span(x: Any, most: float | None = None) -> bool:
    """null, or [low, high] with 0 < low <= high (<= most)."""
    if x is None:
        return True
    if isinstance(x, (str, bytes)) or not hasattr(x, "__len__") or len(x) != 2 or not all(number(v) for v in x):
        return False
    return 0 < x[0] <= x[1] and (most is None or x[1] <= most)


def _probability(x: Any) -> bool:
    return number(x) and 0 <= x <= 1


def _batches(x: Any, least: int) -> bool:
    """null (all), a count >= least, or a fraction of the batches in (0, 1] (Lightning's limit_*_batches)."""
    return x is None or (integer(x) and x >= least) or (isinstance(x, float) and (0 < x <= 1 or x == least))


def _flag(x: Any) -> bool:
    return isinstance(x, bool)


class Rule(NamedTuple):
    test: Callable[[Any], bool]
    said: str  # what follows "KEY=VALUE is not valid" in the error

    def check(self, key: str, value: Any) -> None:
        if not self.test(value):
            raise UserError(f"{key}={value} is not valid{self.said}")


def expect(test: Callable[[Any], bool], valid: str) -> Rule:
    return Rule(test, f": expected {valid}")


def choose(names: tuple[str, ...]) -> Rule:
    return Rule(lambda x: x in names, f"; choose one of {', '.join(names)}")


# the valid names of a named choice (the models build their tables from these)
CHOICES: dict[str, tuple[str, ...]] = {
    "activation": ("relu", "leaky_relu", "prelu", "sigmoid", "tanh", "gelu", "silu", "elu"),
    "norm": ("batch", "layer", "group", "instance", "none"),
    "pool": ("max", "avg", "none"),
    "init": ("default", "kaiming", "xavier", "orthogonal"),
    "class_weights": ("none", "balanced"),
    "policy": ("none", "randaugment", "trivialaugment", "autoaugment"),
    "gradient_clip_algorithm": ("norm", "value"),
    "precision": ("32-true", "bf16-mixed", "16-mixed", "64-true", "bf16-true", "16-true", "transformer-engine",
                  "transformer-engine-float16"),  # Lightning's names
    "strategy": ("linear_probe", "finetune", "gradual"),  # transfer.strategy
    "arch": ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
    "schedule": ("exponential", "linear"),  # lr_find: how the lr grows
}

FLAG = expect(_flag, "true or false")
SEED = expect(integer, "an integer")
POSITIVE = expect(lambda x: number(x) and x > 0, "a number > 0")
NON_NEGATIVE = expect(lambda x: number(x) and x >= 0, "a number >= 0")
COUNT = expect(lambda x: integer(x) and x >= 1, "an integer >= 1")
COUNT_0 = expect(lambda x: integer(x) and x >= 0, "an integer >= 0")
MODE = expect(lambda x: x in ("min", "max"), "min or max")
DROPOUT = expect(lambda x: number(x) and 0 <= x < 1, "a probability in [0, 1)")
FACTOR = expect(lambda x: x is None or number(x) and 0 < x < 1, "a factor in (0, 1)")
FRACTION = expect(lambda x: number(x) and 0 < x < 1, "a fraction in (0, 1)")
PROBABILITY = expect(_probability, "a probability in [0, 1]")
MIXING = expect(lambda x: number(x) and x >= 0, "a number >= 0 (0 is off)")
HISTOGRAMS = ("epoch", "step", "none")

# full path -> rule; `*` is one path segment
RULES: dict[str, Rule] = {
    "seed": SEED,
    "threads": expect(threads.valid, threads.VALID),
    "mode": MODE,
    "resume_changes": FLAG,
    # data
    "data.batch_size": COUNT,
    "data.min_batches": expect(lambda x: integer(x) and x >= 1, "an integer >= 1 (training batches per epoch at "
                               "least; 1: one pass per epoch)"),
    "data.num_workers": COUNT_0,
    "data.bootstrap": FLAG,
    "data.split_seed": SEED,
    "data.val_fraction": FRACTION,
    "data.test_fraction": FRACTION,
    "data.fraction": expect(lambda x: number(x) and 0 < x <= 1, "a fraction in (0, 1]"),
    "data.num_samples": COUNT,
    "data.num_classes": expect(lambda x: integer(x) and x >= 2, "an integer >= 2"),
    "data.image_size": expect(lambda x: x is None or integer(x) and x >= 1, "null (keep the size) or an integer >= 1"),
    "data.normalize": expect(lambda x: x in ("standardize", "minmax", "none"), "standardize, minmax or none"),
    "data.class_weights": choose(CHOICES["class_weights"]),
    # model
    "model.depth": COUNT,
    "model.width": COUNT,
    "model.kernel_size": COUNT,
    "model.heads": COUNT,
    "model.patch": COUNT,
    "model.mlp_ratio": COUNT,
    "model.dropout": DROPOUT,
    "model.negative_slope": NON_NEGATIVE,
    "model.residual": FLAG,
    "model.attention": FLAG,
    "model.compile": FLAG,
    "model.activation": choose(CHOICES["activation"]),
    "model.norm": choose(CHOICES["norm"]),
    "model.pool": choose(CHOICES["pool"]),
    "model.init": choose(CHOICES["init"]),
    "model.arch": choose(CHOICES["arch"]),
    # optimizer
    "optimizer.lr": POSITIVE,
    "optimizer.momentum": expect(lambda x: number(x) and 0 <= x < 1, "a number in [0, 1)"),
    "optimizer.alpha": expect(lambda x: number(x) and 0 <= x <= 1, "a smoothing constant in [0, 1] (rmsprop)"),
    "optimizer.betas": expect(lambda x: isinstance(x, (list, tuple, ListConfig)) and len(x) == 2
                              and all(number(b) and 0 <= b < 1 for b in x), "two numbers in [0, 1), e.g. [0.9,0.999]"),
    # scheduler
    "scheduler.T_max": expect(lambda x: integer(x) and x >= 1, "an integer >= 1 (epochs of one cosine half-period)"),
    "scheduler.gamma": expect(lambda x: number(x) and 0 < x <= 1, "a factor in (0, 1]"),
    "scheduler.factor": FACTOR,
    "scheduler.patience": COUNT_0,
    "scheduler.step_size": COUNT,
    "scheduler.mode": MODE,
    "scheduler.warmup_epochs": COUNT_0,
    "scheduler.pct_start": expect(lambda x: number(x) and 0 < x < 1, "a fraction in (0, 1) of the steps (onecycle's "
                                  "rise)"),
    "scheduler.max_lr": POSITIVE,
    # augmentation
    "augmentation.hflip_p": PROBABILITY,
    "augmentation.vflip_p": PROBABILITY,
    "augmentation.erasing_p": PROBABILITY,
    "augmentation.rotate_deg": expect(lambda x: number(x) and 0 <= x <= 180, "degrees in [0, 180]"),
    "augmentation.translate": expect(lambda x: number(x) and 0 <= x < 1, "a fraction of the size in [0, 1)"),
    "augmentation.scale": expect(_span, "null or [min, max] with 0 < min <= max, e.g. [0.9,1.1]"),
    "augmentation.resized_crop": expect(lambda x: _span(x, 1.0), "null or [min, max] area fractions with 0 < min "
                                        "<= max <= 1"),
    "augmentation.crop_padding": COUNT_0,
    "augmentation.color_jitter": expect(lambda x: number(x) and 0 <= x <= 1, "a strength in [0, 1]"),
    "augmentation.noise_std": NON_NEGATIVE,
    "augmentation.mixup_alpha": MIXING,
    "augmentation.cutmix_alpha": MIXING,
    "augmentation.policy": choose(CHOICES["policy"]),
    # regularization
    "regularization.weight_decay": NON_NEGATIVE,
    "regularization.l1": NON_NEGATIVE,
    "regularization.dropout": DROPOUT,
    "regularization.label_smoothing": expect(lambda x: number(x) and 0 <= x < 1, "a number in [0, 1)"),
    "regularization.exclude_norm_bias": FLAG,
    # clip
    "clip.factor": FACTOR,
    "clip.eps": POSITIVE,
    # trainer
    "trainer.max_epochs": COUNT,
    "trainer.gradient_clip_val": expect(lambda x: x is None or number(x) and x > 0,
                                        "null (no clipping) or a number > 0"),
    "trainer.gradient_clip_algorithm": choose(CHOICES["gradient_clip_algorithm"]),
    "trainer.accumulate_grad_batches": COUNT,
    "trainer.log_every_n_steps": COUNT,
    "trainer.limit_train_batches": expect(lambda x: _batches(x, 1), "null (all), a number of batches >= 1 or a "
                                          "fraction in (0, 1]"),
    "trainer.limit_val_batches": expect(lambda x: _batches(x, 0), "null (all), a number of batches >= 0 or a "
                                        "fraction in (0, 1]"),
    "trainer.limit_test_batches": expect(lambda x: _batches(x, 0), "null (all), a number of batches >= 0 or a "
                                         "fraction in (0, 1]"),
    "trainer.precision": choose(CHOICES["precision"]),
    # callbacks
    "callbacks.checkpoint.mode": MODE,
    "callbacks.early_stopping.mode": MODE,
    "callbacks.early_stopping.patience": COUNT_0,
    "callbacks.early_stopping.min_delta": NON_NEGATIVE,
    "callbacks.early_stopping.check_finite": FLAG,
    "callbacks.progress_bar.refresh_rate": expect(lambda x: integer(x) and x >= 0,
                                                  "an integer >= 0 (0: no progress bar)"),
    "callbacks.ema.decay": expect(lambda x: number(x) and 0 < x < 1, "a number in (0, 1)"),
    "callbacks.ema.update_every_n_steps": COUNT,
    "callbacks.swa.start_epoch": expect(lambda x: number(x) and x >= 0,
                                        "an epoch index, or a fraction (< 1) of trainer.max_epochs"),
    # diagnostics (dlopt.diagnostics.recorder)
    "diagnostics.every_n_steps": Rule(lambda x: integer(x) and x >= 1,
                                      "; expected an integer >= 1 (record every N optimizer steps)"),
    "diagnostics.samples": Rule(lambda x: integer(x) and x >= 1, "; expected an integer >= 1 (validation samples)"),
    "diagnostics.every_n_epochs": Rule(lambda x: integer(x) and x >= 1,
                                       "; expected an integer >= 1 (histograms every N epochs)"),
    "diagnostics.histograms": Rule(lambda x: x in HISTOGRAMS, f"; expected one of {', '.join(HISTOGRAMS)}"),
    "diagnostics.weight_histograms": Rule(_flag, "; expected true or false"),
    "diagnostics.thresholds.*": Rule(lambda x: number(x) and x > 0, "; expected a number > 0"),
    # transfer learning
    "transfer.strategy": choose(CHOICES["strategy"]),
    "transfer.backbone_lr_scale": expect(lambda x: number(x) and 0 < x <= 1, "a factor in (0, 1] of optimizer.lr "
                                         "(transfer.strategy=linear_probe freezes the backbone)"),
    "transfer.unfreeze_at_epoch": COUNT_0,
    # dlopt tune-lr
    "lr_find.min_lr": POSITIVE,
    "lr_find.max_lr": POSITIVE,
    "lr_find.num_training": expect(lambda x: integer(x) and x >= 2, "an integer >= 2"),
    "lr_find.schedule": choose(CHOICES["schedule"]),
    # search (checked by the sweeper before the first trial)
    "search.n_trials": expect(lambda x: x is None or integer(x) and x >= 1,
                              "a positive number of trials (null with search=grid: every combination)"),
    "search.n_jobs": expect(lambda x: integer(x) and x >= 1, "an integer >= 1 (trials in flight at once)"),
    "search.startup_trials": COUNT_0,
    "search.warmup_epochs": COUNT_0,
    "search.population": expect(lambda x: integer(x) and x >= 2, "an integer >= 2 (trials per NSGA-II generation)"),
}
_SHARED = [(key.split("."), rule) for key, rule in RULES.items() if "*" in key]


def rule_of(path: str) -> Rule | None:
    """The rule of the knob at the dotted `path`: its own, else the first wildcard entry that matches it."""
    if path in RULES:
        return RULES[path]
    parts = path.split(".")
    for pattern, rule in _SHARED:
        if len(pattern) == len(parts) and all(p in ("*", part) for p, part in zip(pattern, parts)):
            return rule
    return None


def check_value(path: str, value: Any) -> None:
    """UserError naming `path` and `value` unless the value keeps the knob's rule (a knob without one passes)."""
    rule = rule_of(path)
    if rule is not None:
        rule.check(path, value)


def _leaves(node: DictConfig, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf the user can set; interpolations (model.dropout:
    ${regularization.dropout}) are checked where their value is set, and named so."""
    for key in node:
        full = f"{path}.{key}" if path else str(key)
        if OmegaConf.is_interpolation(node, key) or full == "search.params":  # sweep overrides, not values
            continue
        value = node[key]
        if isinstance(value, DictConfig):
            yield from _leaves(value, full)
        else:
            yield full, value


def check_values(node: DictConfig, path: str = "") -> None:
    """Raise UserError naming the first key under node (at path) whose value breaks its rule."""
    for key, value in _leaves(node, path):
        check_value(key, value)
