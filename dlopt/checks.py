"""Type and range checks on the composed config, run before anything heavy is imported.

Hydra already rejects unknown keys and unknown group options. What it cannot know is that
`lr` must be a positive number or `dropout` a probability below 1; these rules are keyed by the
knob's name, which is the same in every group (`model.dropout`, `regularization.dropout`, ...).
Named choices (activation, norm, ...) are listed here, torch-free, in CHOICES: dlopt.models builds
its tables from these names, so there is one list. Checks that need the data's shape (a patch
larger than the input, instance norm at size 1) stay where the model is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf

from dlopt import threads
from dlopt.errors import UserError, did_you_mean


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


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
    if isinstance(x, (str, bytes)) or not hasattr(x, "__len__") or len(x) != 2 or not all(_number(v) for v in x):
        return False
    return 0 < x[0] <= x[1] and (most is None or x[1] <= most)


def _probability(x: Any) -> bool:
    return _number(x) and 0 <= x <= 1


def _batches(x: Any, least: int) -> bool:
    """null (all), a count >= least, or a fraction of the batches in (0, 1] (Lightning's limit_*_batches)."""
    return x is None or (integer(x) and x >= least) or (isinstance(x, float) and (0 < x <= 1 or x == least))


# knob name -> (test, what a valid value is)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lr": (lambda x: _number(x) and x > 0, "a number > 0"),
    "weight_decay": (lambda x: _number(x) and x >= 0, "a number >= 0"),
    "l1": (lambda x: _number(x) and x >= 0, "a number >= 0"),
    "dropout": (lambda x: _number(x) and 0 <= x < 1, "a probability in [0, 1)"),
    "momentum": (lambda x: _number(x) and 0 <= x < 1, "a number in [0, 1)"),
    "alpha": (lambda x: _number(x) and 0 <= x <= 1, "a smoothing constant in [0, 1] (rmsprop)"),
    "refresh_rate": (lambda x: integer(x) and x >= 0, "an integer >= 0 (0: no progress bar)"),
    "update_every_n_steps": (lambda x: integer(x) and x >= 1, "an integer >= 1"),
    "betas": (lambda x: isinstance(x, (list, tuple, ListConfig)) and len(x) == 2
              and all(_number(b) and 0 <= b < 1 for b in x), "two numbers in [0, 1), e.g. [0.9,0.999]"),
    "T_max": (lambda x: integer(x) and x >= 1, "an integer >= 1 (epochs of one cosine half-period)"),
    "gamma": (lambda x: _number(x) and 0 < x <= 1, "a factor in (0, 1]"),
    "factor": (lambda x: x is None or _number(x) and 0 < x < 1, "a factor in (0, 1)"),
    "eps": (lambda x: _number(x) and x > 0, "a number > 0"),
    "gradient_clip_val": (lambda x: x is None or _number(x) and x > 0, "null (no clipping) or a number > 0"),
    "accumulate_grad_batches": (lambda x: integer(x) and x >= 1, "an integer >= 1"),
    "log_every_n_steps": (lambda x: integer(x) and x >= 1, "an integer >= 1"),
    "min_delta": (lambda x: _number(x) and x >= 0, "a number >= 0"),
    "check_finite": (lambda x: isinstance(x, bool), "true or false"),
    "resume_changes": (lambda x: isinstance(x, bool), "true or false"),
    "compile": (lambda x: isinstance(x, bool), "true or false"),
    "bootstrap": (lambda x: isinstance(x, bool), "true or false"),
    "decay": (lambda x: _number(x) and 0 < x < 1, "a number in (0, 1)"),
    "start_epoch": (lambda x: _number(x) and x >= 0, "an epoch index, or a fraction (< 1) of trainer.max_epochs"),
    "hflip_p": (_probability, "a probability in [0, 1]"),
    "vflip_p": (_probability, "a probability in [0, 1]"),
    "erasing_p": (_probability, "a probability in [0, 1]"),
    "rotate_deg": (lambda x: _number(x) and 0 <= x <= 180, "degrees in [0, 180]"),
    "translate": (lambda x: _number(x) and 0 <= x < 1, "a fraction of the size in [0, 1)"),
    "scale": (_span, "null or [min, max] with 0 < min <= max, e.g. [0.9,1.1]"),
    "resized_crop": (lambda x: _span(x, 1.0), "null or [min, max] area fractions with 0 < min <= max <= 1"),
    "color_jitter": (lambda x: _number(x) and 0 <= x <= 1, "a strength in [0, 1]"),
    "noise_std": (lambda x: _number(x) and x >= 0, "a number >= 0"),
    "mixup_alpha": (lambda x: _number(x) and x >= 0, "a number >= 0 (0 is off)"),
    "cutmix_alpha": (lambda x: _number(x) and x >= 0, "a number >= 0 (0 is off)"),
    "label_smoothing": (lambda x: _number(x) and 0 <= x < 1, "a number in [0, 1)"),
    "exclude_norm_bias": (lambda x: isinstance(x, bool), "true or false"),
    "batch_size": (lambda x: integer(x) and x >= 1, "an integer >= 1"),
    "min_batches": (lambda x: integer(x) and x >= 1, "an integer >= 1 (training batches per epoch at least; 1: one "
                    "pass per epoch)"),
    "num_workers": (lambda x: integer(x) and x >= 0, "an integer >= 0"),
    "depth": (lambda x: integer(x) and x >= 1, "an integer >= 1"),
    "width": (lambda x: integer(x) and x >= 1, "an integer >= 1"),
    "kernel_size": (lambda x: integer(x) and x >= 1, "an integer >= 1"),
    "crop_padding": (lambda x: integer(x) and x >= 0, "an integer >= 0"),
    "max_epochs": (lambda x: integer(x) and x >= 1, "an integer >= 1"),
    "limit_train_batches": (lambda x: _batches(x, 1), "null (all), a number of batches >= 1 or a fraction in (0, 1]"),
    "limit_val_batches": (lambda x: _batches(x, 0), "null (all), a number of batches >= 0 or a fraction in (0, 1]"),
    "limit_test_batches": (lambda x: _batches(x, 0), "null (all), a number of batches >= 0 or a fraction in (0, 1]"),
    "patience": (lambda x: integer(x) and x >= 0, "an integer >= 0"),
    "step_size": (lambda x: integer(x) and x >= 1, "an integer >= 1"),
    "backbone_lr_scale": (lambda x: _number(x) and 0 < x <= 1,
                          "a factor in (0, 1] of optimizer.lr (transfer.strategy=linear_probe freezes the backbone)"),
    "unfreeze_at_epoch": (lambda x: integer(x) and x >= 0, "an integer >= 0"),
    "seed": (integer, "an integer"),
    "threads": (threads.valid, threads.VALID),
    "split_seed": (integer, "an integer"),
    "val_fraction": (lambda x: _number(x) and 0 < x < 1, "a fraction in (0, 1)"),
    "test_fraction": (lambda x: _number(x) and 0 < x < 1, "a fraction in (0, 1)"),
    "fraction": (lambda x: _number(x) and 0 < x <= 1, "a fraction in (0, 1]"),
    "num_samples": (lambda x: integer(x) and x >= 1, "an integer >= 1"),
    "num_classes": (lambda x: integer(x) and x >= 2, "an integer >= 2"),
    "image_size": (lambda x: x is None or integer(x) and x >= 1, "null (keep the size) or an integer >= 1"),
    "mode": (lambda x: x in ("min", "max"), "min or max"),
    "normalize": (lambda x: x in ("standardize", "minmax", "none"), "standardize, minmax or none"),
    "heads": (lambda x: integer(x) and x >= 1, "an integer >= 1"),
    "patch": (lambda x: integer(x) and x >= 1, "an integer >= 1"),
    "mlp_ratio": (lambda x: integer(x) and x >= 1, "an integer >= 1"),
    "negative_slope": (lambda x: _number(x) and x >= 0, "a number >= 0"),
    "residual": (lambda x: isinstance(x, bool), "true or false"),
    "attention": (lambda x: isinstance(x, bool), "true or false"),
    "num_training": (lambda x: integer(x) and x >= 2, "an integer >= 2"),  # lr_find: steps of the range test
    # search (checked by the sweeper before the first trial)
    "n_trials": (lambda x: x is None or integer(x) and x >= 1,
                 "a positive number of trials (null with search=grid: every combination)"),
    "n_jobs": (lambda x: integer(x) and x >= 1, "an integer >= 1 (trials in flight at once)"),
    "startup_trials": (lambda x: integer(x) and x >= 0, "an integer >= 0"),
    "warmup_epochs": (lambda x: integer(x) and x >= 0, "an integer >= 0"),  # search's, scheduler's (epochs)
    "pct_start": (lambda x: _number(x) and 0 < x < 1, "a fraction in (0, 1) of the steps (onecycle's rise)"),
    "max_lr": (lambda x: _number(x) and x > 0, "a number > 0"),  # onecycle's, lr_find's
    "population": (lambda x: integer(x) and x >= 2, "an integer >= 2 (trials per NSGA-II generation)"),
}

# knob name -> the valid names, for a key of that name anywhere in the config; a dotted key
# (transfer.strategy) is that key only, where the bare name means something else elsewhere
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
    "transfer.strategy": ("linear_probe", "finetune", "gradual"),
    "arch": ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
    "schedule": ("exponential", "linear"),  # lr_find: how the lr grows (not `mode`, which is min|max)
}


TRANSFER_SOURCES = "a dlopt run folder (outputs/train/DATE/TIME), a dlopt .ckpt or a state_dict file of the network"


def transfer_source(source: str) -> Path:
    """The file transfer.from names: a run folder's checkpoints/best.ckpt, or the file itself."""
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"transfer.from={source} does not exist; give {TRANSFER_SOURCES}")
    if not path.is_dir():
        return path
    from dlopt.saved_run import cross_validation

    folds = cross_validation(path)
    if folds:
        raise UserError(f"transfer.from={source} is {folds}; give one, e.g. transfer.from={path / 'folds' / '0'}")
    if not (path / "checkpoints" / "best.ckpt").is_file():
        raise UserError(f"transfer.from={source} is not a dlopt run folder (it has no checkpoints/best.ckpt); "
                        f"give {TRANSFER_SOURCES}")
    return path / "checkpoints" / "best.ckpt"


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
    """Raise UserError naming the first key under node (at path) whose value breaks its rule or choices."""
    for path, value in _leaves(node, path):
        name = path.rsplit(".", 1)[-1]
        if name in RULES:
            test, valid = RULES[name]
            if not test(value):
                raise UserError(f"{path}={value} is not valid: expected {valid}")
        choices = CHOICES.get(path, CHOICES.get(name))
        if choices is not None and value not in choices:
            raise UserError(f"{path}={value} is not valid; choose one of {', '.join(choices)}")


# the groups a run is built from: `~model` cannot remove one (`~scheduler`, `~logger`, `~clip` can)
REQUIRED_GROUPS = ("data", "model", "optimizer", "augmentation", "regularization", "trainer")
# keys dlopt sets itself when it builds the object, so that a value given for them would be ignored
SET_BY_DLOPT = {
    "logger.save_dir": "the run folder (hydra.run.dir=DIR)",
    "trainer.default_root_dir": "the run folder (hydra.run.dir=DIR)",
    "trainer.logger": "the logger group (logger=csv, ~logger for none)",
    "trainer.callbacks": "the callbacks group (callbacks=[default,ema], callbacks.NAME=null)",
    "trainer.plugins": "dlopt's checkpoint writer",
}


HISTOGRAMS = ("epoch", "step", "none")


def check_diagnostics(cfg: DictConfig) -> None:
    """The diagnostics group (dlopt.diagnostics.recorder): a cadence >= 1, a histogram choice, thresholds > 0."""
    node = cfg.get("diagnostics")
    if not node:
        return
    for key, valid, text in (
            ("every_n_steps", lambda x: integer(x) and x >= 1, "an integer >= 1 (record every N optimizer steps)"),
            ("samples", lambda x: integer(x) and x >= 1, "an integer >= 1 (validation samples)"),
            ("every_n_epochs", lambda x: integer(x) and x >= 1, "an integer >= 1 (histograms every N epochs)"),
            ("histograms", lambda x: x in HISTOGRAMS, f"one of {', '.join(HISTOGRAMS)}"),
            ("weight_histograms", lambda x: isinstance(x, bool), "true or false")):
        if key in node and not valid(node[key]):
            raise UserError(f"diagnostics.{key}={node[key]} is not valid; expected {text}")
    thresholds = node.get("thresholds")
    if not isinstance(thresholds, DictConfig):
        raise UserError(f"diagnostics.thresholds={thresholds} is not valid; expected its keys (see "
                        "conf/diagnostics/default.yaml)")
    for key, value in thresholds.items():
        if not _number(value) or value <= 0:
            raise UserError(f"diagnostics.thresholds.{key}={value} is not valid; expected a number > 0")


def check(cfg: DictConfig) -> None:
    """Raise UserError naming the first key whose value breaks its rule."""
    if cfg.get("experiment") is not None:  # Hydra put the file's keys under `experiment`, where they do nothing
        raise UserError("experiment: the file has no `# @package _global_` line at its top, so its keys landed "
                        "under experiment.* and would change nothing; add that line (see conf/experiment/example.yaml)")
    for group in REQUIRED_GROUPS:
        if cfg.get(group) is None:
            raise UserError(f"{group} is missing (~{group} removes it): a run needs one; pick an option "
                            f"({group}=...), `dlopt train --help` lists them")
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # an interpolation that does not resolve
        raise UserError(f"the config does not resolve: {err}".splitlines()[0]) from None
    for key, what in SET_BY_DLOPT.items():
        if OmegaConf.select(cfg, key, default=None) is not None:
            raise UserError(f"{key} is set by dlopt to {what}; remove it from your overrides")
    for name, node in (cfg.get("callbacks") or {}).items():
        if isinstance(node, DictConfig) and node.get("dirpath") is not None:
            raise UserError(f"callbacks.{name}.dirpath is set by dlopt to RUN_DIR/checkpoints; choose the run "
                            f"folder with hydra.run.dir=DIR")
    check_values(cfg)
    check_diagnostics(cfg)
    transfer = cfg.get("transfer")
    if isinstance(transfer, DictConfig) and transfer.get("from") is not None:
        transfer_source(str(transfer["from"]))
    model = cfg.get("model")
    # cnn's heads divide the channel count at the end of its stack, checked when it is built
    if isinstance(model, DictConfig) and "heads" in model and "width" in model \
            and "attention" not in model and model.width % model.heads:
        raise UserError(f"model.width={model.width} is not divisible by model.heads={model.heads}; "
                        f"choose heads that divide the width")
    _check_monitors(cfg)
    _check_cv(cfg)
    _check_lbfgs(cfg)
    _check_label_changing(cfg)
    _check_warmup(cfg)
    _check_lr_find(cfg)


def logged_metrics(cfg: DictConfig) -> list[str]:
    """The metrics every epoch logs (dlopt/training/module.py), so that a monitor is checked before training."""
    regularization = cfg.get("regularization")
    l1 = isinstance(regularization, DictConfig) and bool(regularization.get("l1"))
    return ["train/loss", "train/acc", *(["train/l1"] if l1 else []), "val/loss", "val/acc", "val/f1", "val/ece"]


def _check_monitors(cfg: DictConfig) -> None:
    """`monitor` and the callbacks' monitors name a metric that is logged (validation must run for val/)."""
    if "monitor" not in cfg:
        return
    logged = logged_metrics(cfg)
    callbacks = cfg.get("callbacks") or {}
    watched = [("monitor", cfg.monitor)] + [(f"callbacks.{name}.monitor", node.get("monitor")) for name, node in
                                            callbacks.items() if isinstance(node, DictConfig)]
    trainer = cfg.get("trainer") or {}
    for key, name in watched:  # `monitor` first: a callback that follows it (${monitor}) is named as `monitor`
        if name is None:  # not monitored (last_checkpoint)
            continue
        if name not in logged:
            raise UserError(f"{key}={name} is not a metric dlopt logs{did_you_mean(name, logged)}; "
                            f"choose one of {', '.join(logged)}")
        if str(name).startswith("val/") and trainer.get("limit_val_batches") in (0, 0.0):
            raise UserError(f"trainer.limit_val_batches=0 skips validation, so {key}={name} is never logged; "
                            f"validate at least one batch or monitor a train/ metric")


# each augmentation knob's value that switches its transform off (dlopt.data.augment)
OFF = {"hflip_p": 0, "vflip_p": 0, "rotate_deg": 0, "translate": 0, "scale": None, "crop_padding": 0,
       "resized_crop": None, "color_jitter": 0, "erasing_p": 0, "policy": "none", "cutmix_alpha": 0,
       "noise_std": 0, "mixup_alpha": 0}


def refuse_label_changing(knobs: dict, label_changing: Any, set_by_user: Any, data: str) -> list[str]:
    """The knobs of `label_changing` (data.label_changing) that `knobs` switch on; UserError when the user set one
    (`set_by_user`: knob names from the command line). dlopt train calls it before torch is imported, the
    augmentation's builder again (dlopt.data.augment.keeping_labels, which skips a preset's)."""
    changing = [key for key in label_changing or () if knobs.get(key, OFF.get(key)) != OFF.get(key)]
    refused = [key for key in changing if key in set_by_user]
    if refused:  # every one of them in one line, so that one retry suffices
        one = len(refused) == 1
        listed = f"data.label_changing=[{','.join(label_changing)}], transforms that change what class a sample is"
        raise UserError(f"{' and '.join(f'augmentation.{k}={knobs[k]}' for k in refused)} refused: data={data} lists "
                        f"{'it' if one else 'them'} in {listed}; set "
                        f"{' '.join(f'augmentation.{k}={OFF[k]}' for k in refused)}, or data.label_changing=[] if "
                        f"your classes survive {'it' if one else 'them'}")
    return changing


def _check_label_changing(cfg: DictConfig) -> None:
    """data.label_changing lists augmentation knobs (dlopt.data.augment.keeping_labels)."""
    data, augmentation = cfg.get("data"), cfg.get("augmentation")
    if not isinstance(data, DictConfig) or not isinstance(augmentation, DictConfig):
        return
    value = data.get("label_changing")
    knobs = [str(k) for k in augmentation]
    if value is not None and not (isinstance(value, ListConfig) and all(v in knobs for v in value)):
        raise UserError(f"data.label_changing={value} is not valid: expected a list of augmentation knobs whose "
                        f"transform changes the class, e.g. [hflip_p,vflip_p], or []; the knobs are {', '.join(knobs)}")


def _check_cv(cfg: DictConfig) -> None:
    """data.cv: K >= 2 folds (or one fold 'k/K', checked with the data), alone: not with another resampling of the
    training split, nor in a command that does not train runs of its own."""
    data = cfg.get("data")
    cv = data.get("cv") if isinstance(data, DictConfig) else None
    if cv is None:
        return
    if isinstance(cv, bool) or not (integer(cv) and cv >= 2 or isinstance(cv, str) and "/" in cv):
        raise UserError(f"data.cv={cv} is not valid: expected a number of folds K >= 2 (data.cv=5: five runs, each "
                        "testing on one fold), null (no cross-validation) or one fold 'k/K'")
    for key, off in (("fold", None), ("bootstrap", False), ("sample_weights", None)):
        if data.get(key, off) not in (off, None):
            shown = str(data.get(key)).lower() if isinstance(data.get(key), bool) else data.get(key)
            raise UserError(f"data.cv={cv} with data.{key}={shown}: cross-validation chooses each run's "
                            f"training samples itself; choose one of them")
    if integer(cv) and cfg.get("lr_find") is not None:
        raise UserError(f"data.cv={cv}: dlopt tune-lr runs one range test; test one fold's split with data.cv=0/{cv}")
    if integer(cv) and cfg.get("method") is not None:
        raise UserError(f"data.cv={cv}: an ensemble's members are single runs (stacking's out-of-fold predictions: "
                        "ensemble.folds=K); drop data.cv")


def _check_lbfgs(cfg: DictConfig) -> None:
    """optimizer=lbfgs evaluates each step's loss several times on the whole training split: one batch per step, the
    same batch at every evaluation (no accumulation, no mixed samples)."""
    optimizer = cfg.get("optimizer")
    if not isinstance(optimizer, DictConfig) or not str(optimizer.get("_target_", "")).endswith("LBFGS"):
        return
    trainer, augmentation = cfg.get("trainer"), cfg.get("augmentation")
    accumulate = trainer.get("accumulate_grad_batches", 1) if isinstance(trainer, DictConfig) else 1
    if integer(accumulate) and accumulate > 1:
        raise UserError(f"optimizer=lbfgs with trainer.accumulate_grad_batches={accumulate}: L-BFGS takes the whole "
                        "training split as one batch each step; drop trainer.accumulate_grad_batches")
    for key in ("mixup_alpha", "cutmix_alpha"):
        value = augmentation.get(key) if isinstance(augmentation, DictConfig) else None
        if _number(value) and value > 0:
            raise UserError(f"optimizer=lbfgs with augmentation.{key}={value}: L-BFGS's curvature estimate assumes "
                            "one fixed loss over the training split, and mixing draws new mixtures every step; use "
                            "another optimizer or augmentation=none")
    precision = str(trainer.get("precision", "")) if isinstance(trainer, DictConfig) else ""
    if precision.startswith("16"):
        raise UserError(f"optimizer=lbfgs with trainer.precision={precision}: Lightning's gradient scaler cannot drive "
                        "L-BFGS's closure; use trainer.precision=32-true or bf16-mixed")
    if cfg.get("lr_find") is not None:
        raise UserError("optimizer=lbfgs finds its step length by line search: dlopt tune-lr has no lr to find for it")


def _check_warmup(cfg: DictConfig) -> None:
    """scheduler.warmup_epochs leaves epochs for the schedule: below trainer.max_epochs (when it is set)."""
    scheduler, trainer = cfg.get("scheduler"), cfg.get("trainer")
    if not isinstance(scheduler, DictConfig) or not isinstance(trainer, DictConfig):
        return
    warmup, epochs = scheduler.get("warmup_epochs"), trainer.get("max_epochs")
    if warmup and integer(epochs) and epochs >= 1 and warmup >= epochs:
        raise UserError(f"scheduler.warmup_epochs={warmup} is not below trainer.max_epochs={epochs}: the warmup "
                        f"would take the whole run; choose fewer warmup epochs or more trainer.max_epochs")


def _check_lr_find(cfg: DictConfig) -> None:
    """dlopt tune-lr's lr_find.min_lr and max_lr (checked here, not by name: scheduler.min_lr may be 0),
    and no fast_dev_run, with which Lightning skips the range test."""
    node = cfg.get("lr_find")
    if not isinstance(node, DictConfig):
        return
    trainer = cfg.get("trainer")
    if isinstance(trainer, DictConfig) and trainer.get("fast_dev_run"):
        raise UserError(f"trainer.fast_dev_run={trainer.fast_dev_run} makes Lightning skip the range test: drop it")
    low, high = node.get("min_lr"), node.get("max_lr")
    for key, value in (("min_lr", low), ("max_lr", high)):
        if not (_number(value) and value > 0):
            raise UserError(f"lr_find.{key}={value} is not valid: expected a number > 0")
    if low >= high:
        raise UserError(f"lr_find.min_lr={low} is not below lr_find.max_lr={high}: "
                        f"the range test raises the lr from min_lr to a larger max_lr")


# keys of a target's node that dlopt reads itself instead of passing them to the target
OWN_KEYS = {"model.compile", "scheduler.warmup_epochs", "data.bootstrap", "data.sample_weights", "data.fold",
            "data.label_changing"}


def check_arguments(node: DictConfig, path: str) -> None:
    """Each object the config node at `path` builds takes every key given to it: `+model.foo=1` is one
    line naming model.foo and the model's settings instead of a TypeError from inside the build.
    Imports the targets, so it runs where they are built."""
    import inspect

    from hydra.utils import get_object

    for key in node:
        value = node.get(key)
        if isinstance(value, DictConfig):
            check_arguments(value, f"{path}.{key}")
    target = node.get("_target_")
    if target is None:
        return
    try:
        parameters = inspect.signature(get_object(str(target))).parameters
    except Exception as err:
        raise UserError(f"{path}._target_={target} cannot be built: {str(err).splitlines()[0]}") from None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [str(k) for k in node if not str(k).startswith("_") and k not in parameters
               and f"{path}.{k}" not in OWN_KEYS]
    if unknown:
        raise not_a_setting(node, path, unknown[0],
                            [name for name, p in parameters.items() if p.default is not inspect.Parameter.empty])


def not_a_setting(node: DictConfig, path: str, key: str, settings: list[str]) -> UserError:
    """The error for a key given to the target of the node at `path` that the target does not take."""
    return UserError(f"{path}.{key} is not a setting of {path} ({node.get('_target_')}){did_you_mean(key, settings)}; "
                     f"its settings are {', '.join(settings)}")
