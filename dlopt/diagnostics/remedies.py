"""Remedies for each symptom, as dlopt overrides, ranked best first for the run at hand.

A remedy is offered only when the run's config has its knob (an MLP has no kernel size, a ResNet
always has norms) and it would change something; values (a learning rate, a clipping threshold)
are computed from the evidence. The command of a remedy is the run's own overrides with the
remedy's replacing those of the same key.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from typing import Any, Callable

from dlopt.diagnostics.symptoms import USUAL_LR, Finding, epochs_budget, lbfgs, lr_direction

RELU_FAMILY = ("relu", "leaky_relu", "prelu", "gelu", "silu", "elu")
# the update/weight ratio a computed lr aims at, the near edge of the 3e-3 to 1.2e-2 of healthy runs on
# bench/doctor.py: a lower lr aims at 3e-3, a higher one at 1e-2 (the ratio does not scale exactly with lr)
LOWER_TARGET, HIGHER_TARGET = 3e-3, 1e-2
LR_SYMPTOMS = ("lr_out_of_range", "lr_too_high", "lr_too_low")  # symptoms of the learning rate itself
IMAGE_SOURCES = ("digits", "mnist", "fashion_mnist", "cifar10", "image_folder")


@dataclass
class Remedy:
    overrides: list[str]
    why: str


def _round(x: float) -> str:
    return f"{float(f'{x:.2g}'):g}"


def _model(config: dict) -> dict:
    return config.get("model") or {}


def _has(config: dict, group: str, key: str) -> bool:
    return key in (config.get(group) or {})


def _activation(config: dict) -> list[Remedy]:
    if _model(config).get("activation") in ("relu", "sigmoid", "tanh") and _has(config, "model", "activation"):
        return [Remedy(["model.activation=leaky_relu"], "a leaky ReLU passes gradient for every input, "
                       "never saturates and cannot die")]
    return []


def _norm(config: dict) -> list[Remedy]:
    if _model(config).get("norm") == "none":
        return [Remedy(["model.norm=batch"], "batch norm keeps every layer's inputs centred and scaled")]
    return []


def _residual(config: dict) -> list[Remedy]:
    if _model(config).get("residual") is False:
        return [Remedy(["model.residual=true"], "skip connections carry the gradient past each block")]
    return []


def _init(config: dict) -> list[Remedy]:
    model = _model(config)
    if model.get("init") == "default":
        kind = "kaiming" if model.get("activation") in RELU_FAMILY else "xavier"
        return [Remedy([f"model.init={kind}"], f"{kind} init scales each layer's weights so signals keep their size")]
    return []


def learning_rate(findings: list[Finding], config: dict) -> list[Remedy]:
    """The one learning rate a report proposes, whichever symptom offers it: its direction from all the symptoms
    (symptoms.lr_direction), its value from the finding that decides it (_lr_value). A lower lr for a run that was
    learning needs more epochs to go as far, and says so."""
    optimizer = config.get("optimizer") if isinstance(config.get("optimizer"), dict) else {}
    lr = optimizer.get("lr")
    direction, root = lr_direction(findings)
    if direction is None or not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        return []
    value, why = _lr_value(lr, direction, root, USUAL_LR.get(str(optimizer.get("_target_"))))
    if float(_round(value)) == lr:
        return []
    overrides, why = [f"optimizer.lr={_round(value)}"], f"{why}; or find one with dlopt tune-lr"
    epochs = epochs_budget(config)
    wrecked = any(f.symptom in ("stuck", "lr_out_of_range") or f.facts.get("diverged") for f in findings)
    if direction == "lower" and epochs and not wrecked:
        overrides.append(f"trainer.max_epochs={2 * epochs}")
        why += f"; needs more epochs: trainer.max_epochs={2 * epochs}"
    return [Remedy(overrides, why)]


def _lr_value(lr: float, direction: str, root: Finding, usual: tuple[float, float, float] | None) -> tuple[float, str]:
    """The optimizer's usual lr when the lr lies far outside the usual range; else the lr times the factor that brings
    the update/weight ratio to its target (10x without a ratio), within [0.01, 0.3] lower or [3, 100] higher, never
    past the far edge of the usual range. With what it is, for a person."""
    if root.symptom == "lr_out_of_range":
        low, high = root.facts["usual_range"]
        return root.facts["usual_lr"], f"{root.facts['optimizer']}'s usual learning rate, within its {low:g} to {high:g}"
    ratio = root.facts.get("update_ratio")
    target, least, most = (LOWER_TARGET, 0.01, 0.3) if direction == "lower" else (HIGHER_TARGET, 3, 100)
    measured = isinstance(ratio, float) and ratio > 0 and math.isfinite(ratio)
    value = lr * min(max(target / ratio if measured else (0.1 if direction == "lower" else 10), least), most)
    if usual:  # the far edge of the usual range, unless the lr already lies beyond it
        value = min(value, max(usual[2], lr)) if direction == "higher" else max(value, min(usual[0], lr))
    why = ("smaller" if direction == "lower" else "larger") + " steps"
    return value, why + (f", the update/weight ratio brought to about {target:g}" if measured else "")


def _clip(config: dict, finding: Finding) -> list[Remedy]:
    p90 = finding.facts.get("p90_grad_norm")
    value = _round(p90) if isinstance(p90, float) and p90 > 0 else "1.0"
    if (config.get("trainer") or {}).get("gradient_clip_val"):
        return []
    return [Remedy([f"trainer.gradient_clip_val={value}"], "clipping at about the 90th percentile of the "
                   "gradient norms (Deep Learning Tuning Playbook) caps the rare huge steps")]


def _warmup(config: dict) -> list[Remedy]:
    epochs = epochs_budget(config) or 10
    if _has(config, "scheduler", "warmup_epochs") and not config["scheduler"]["warmup_epochs"]:
        return [Remedy([f"scheduler.warmup_epochs={max(1, min(5, epochs // 10))}"],
                       "a linear warmup lets the first steps settle before the full learning rate")]
    return []


def _regularize(config: dict) -> list[Remedy]:
    remedies = []
    if _has(config, "model", "dropout") and not _model(config)["dropout"]:
        remedies.append(Remedy(["regularization=dropout"], "dropout 0.3 keeps units from co-adapting to the "
                               "training samples"))
    if not (config.get("regularization") or {}).get("weight_decay"):
        remedies.append(Remedy(["regularization=l2"], "L2 weight decay keeps the weights small"))
    if _source(config) in IMAGE_SOURCES and not (config.get("augmentation") or {}).get("crop_padding"):
        remedies.append(Remedy(["augmentation=light"], "augmentation shows new variants of the training images"))
    return remedies


def _source(config: dict) -> str:
    """The data source's name (digits, mnist1d, csv, ...)."""
    return str((config.get("data") or {}).get("_target_", "")).rpartition(".")[2]


def _bigger(config: dict) -> list[Remedy]:
    model, remedies = _model(config), []
    if str(model.get("_target_", "")).endswith(".Linear"):
        remedies.append(Remedy(["model=mlp"], "hidden layers let the network fit what a linear model cannot"))
    if str(model.get("_target_", "")).endswith(("MLP", ".Linear")) and _source(config) != "csv":
        remedies.append(Remedy(["model=cnn"], "a CNN sees the images' and signals' local structure that a fully "
                               "connected network must learn from scratch"))
    if isinstance(model.get("width"), int) and not isinstance(model.get("width"), bool):
        factor = 4 if model["width"] <= 16 else 2
        remedies.append(Remedy([f"model.width={factor * model['width']}"], "a wider network has room to fit the data"))
    if isinstance(model.get("depth"), int) and not isinstance(model.get("depth"), bool):
        remedies.append(Remedy([f"model.depth={model['depth'] + max(1, model['depth'] // 2)}"],
                               "a deeper network can represent more"))
    if (config.get("regularization") or {}).get("weight_decay") or model.get("dropout"):
        remedies.append(Remedy(["regularization=none"], "less regularization lets the network fit"))
    return remedies


def _longer(config: dict) -> list[Remedy]:
    epochs = epochs_budget(config)
    return [Remedy([f"trainer.max_epochs={2 * epochs}"], "more epochs to finish learning")] if epochs else []


# L-BFGS takes the whole training split as one batch in each step: offered for a table up to this many rows (as
# conf/optimizer/lbfgs.yaml says)
FULL_BATCH_ROWS = 100_000


def _more_steps(config: dict, finding: Finding) -> list[Remedy]:
    """About the optimizer steps a run needs (the finding's target_steps, thresholds.few_steps): more epochs; as many
    epochs of more batches (data.min_batches passes a small training split several times per epoch), when the
    run's data has the knob and trainer.limit_train_batches does not cap it; for a linear model or a small table,
    L-BFGS, which needs few steps."""
    facts = finding.facts
    target, per, epochs, batches = (facts.get(k) for k in ("target_steps", "steps_per_epoch", "epochs",
                                                           "batches_per_epoch"))
    if not per or not epochs or not target:
        return []
    more_epochs = math.ceil(target / per)
    remedies = [Remedy([f"trainer.max_epochs={more_epochs}"],
                       f"train longer: {more_epochs} epochs of {per:.3g} steps, about {round(more_epochs * per)} "
                       "optimizer steps")]
    limit = (config.get("trainer") or {}).get("limit_train_batches")
    if _has(config, "data", "min_batches") and batches:
        least = math.ceil(target / epochs * batches / per)  # batches per step: gradient accumulation
        uncapped = limit is None or (isinstance(limit, float) and limit >= 1.0) or \
            (isinstance(limit, int) and not isinstance(limit, bool) and limit >= least)
        if least > batches and uncapped:
            remedies.append(Remedy(
                [f"data.min_batches={least}"],
                f"train longer in the same {epochs} epochs: each passes over the training split until it has drawn "
                f"about {least} batches, about {target:g} optimizer steps in all (less time in validation and "
                "checkpoints than more epochs)"))
    passes = facts.get("passes_per_epoch") or 1
    size = (config.get("data") or {}).get("batch_size")
    rows = batches / passes * size if batches and isinstance(size, int) else math.inf
    linear = str(_model(config).get("_target_", "")).endswith(".Linear")
    if not lbfgs(config) and (linear or (_source(config) == "csv" and rows <= FULL_BATCH_ROWS)):
        remedies.append(Remedy(["optimizer=lbfgs"], "L-BFGS takes the whole training split in each step and fits a "
                               "linear model or a small table in tens of steps"))
    return remedies


def _patience(config: dict, finding: Finding) -> list[Remedy]:
    patience = finding.facts.get("patience")
    patience = patience if isinstance(patience, int) else 3
    return [Remedy([f"callbacks.early_stopping.patience={max(10, 2 * patience)}"],
                   "more patience rides out a plateau")]


def _range(config: dict, findings: list[Finding]) -> list[Remedy]:
    higher = lr_direction(findings)[0] == "higher"
    return learning_rate(findings, config) + (_longer(config) if higher else [])


def _lr_first(config: dict, findings: list[Finding], others: list[Remedy]) -> list[Remedy]:
    """A symptom's own remedies with the report's learning rate before them when a symptom of the learning rate
    itself decided it (then it is the cause), after them otherwise."""
    root = lr_direction(findings)[1]
    lr = learning_rate(findings, config)
    return lr + others if root is not None and root.symptom in LR_SYMPTOMS else others + lr


# per symptom: its remedies from the run's config, the finding and all the findings of the report (c, f, fs)
REMEDIES: dict[str, Callable[[dict, Finding, list[Finding]], list[Remedy]]] = {
    "lr_out_of_range": lambda c, f, fs: _range(c, fs),
    "too_few_steps": lambda c, f, fs: _more_steps(c, f),
    "vanishing_gradients": lambda c, f, fs: (_activation(c) + _norm(c) + _residual(c)
                                             if _model(c).get("activation") in ("sigmoid", "tanh")
                                             else _residual(c) + _norm(c) + _activation(c)) + _init(c),
    "exploding_gradients": lambda c, f, fs: _clip(c, f) + learning_rate(fs, c) + _norm(c),
    "dead_units": lambda c, f, fs: _lr_first(c, fs, _activation(c) + _init(c)),
    "saturated_units": lambda c, f, fs: _activation(c) + _norm(c) + _init(c),
    "lr_too_high": lambda c, f, fs: learning_rate(fs, c) + _warmup(c) + _clip(c, f),
    "lr_too_low": lambda c, f, fs: learning_rate(fs, c) + _longer(c),
    "stuck": lambda c, f, fs: _lr_first(c, fs, _norm(c) + _activation(c) + _init(c)),
    "underfitting": lambda c, f, fs: _bigger(c) + _longer(c),
    "overfitting": lambda c, f, fs: _regularize(c),
    "not_converged": lambda c, f, fs: _longer(c),
    "eager_stopping": lambda c, f, fs: _patience(c, f),
}


def remedies(finding: Finding, config: dict[str, Any], findings: list[Finding] | None = None) -> list[Remedy]:
    """The remedies of one finding, best first; `findings`, all of the report's, decide the learning rate."""
    seen, ranked = set(), []
    for remedy in REMEDIES[finding.symptom](config, finding, findings or [finding]):
        key = tuple(remedy.overrides)
        if key not in seen:
            seen.add(key)
            ranked.append(remedy)
    return ranked


def key_of(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def with_remedy(overrides: list[str], remedy: list[str]) -> list[str]:
    """The run's overrides with the remedy's replacing those of the same key (a group's option too)."""
    replaced = {key_of(o) for o in remedy}
    last = {key_of(o): i for i, o in enumerate(overrides)}  # a key given twice: Hydra takes the last

    def kept(i: int, override: str) -> bool:
        key = key_of(override)  # a new option of a group drops the settings of the old one (model=cnn: model.*)
        return key not in replaced and key.split(".")[0] not in replaced and last[key] == i

    return [o for i, o in enumerate(overrides) if kept(i, o)] + remedy


def command(overrides: list[str]) -> str:
    return " ".join(["dlopt", "train", *(shlex.quote(o) for o in overrides)])
