"""Rules across the keys of a training run's config (dlopt train, tune-lr, an ensemble's members): the groups a run
needs, keys dlopt sets itself, monitors that name a logged metric, and combinations that cannot train (cross-validation
with another resampling, L-BFGS with mixing, a warmup longer than the run, a range test Lightning would skip, an
augmentation the data declares label-changing). Torch-free: they run right after composition."""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path
from typing import Any, Collection, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

from dlopt.checks.values import check_values, integer, number
from dlopt.data.knobs import OFF, PATHS, data_path
from dlopt.errors import UserError, did_you_mean
from dlopt.training.logged import monitorable

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
TRANSFER_SOURCES = "a dlopt run folder (outputs/train/DATE/TIME), a dlopt .ckpt or a state_dict file of the network"


def check(cfg: DictConfig, set_by_user: Collection[str] = (), data: str | None = None) -> None:
    """Raise UserError naming the first key of a run's config whose value breaks its rule. `set_by_user`: the keys
    the command line set (augmentation.hflip_p), `data`: the data option's name, for the label-changing rule."""
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
    check_thresholds(cfg)
    transfer = cfg.get("transfer")
    if isinstance(transfer, DictConfig) and transfer.get("from") is not None:
        transfer_source(str(transfer["from"]))
    model = cfg.get("model")
    # cnn's heads divide the channel count at the end of its stack, checked when it is built
    if isinstance(model, DictConfig) and "heads" in model and "width" in model \
            and "attention" not in model and model.width % model.heads:
        raise UserError(f"model.width={model.width} is not divisible by model.heads={model.heads}; "
                        f"choose heads that divide the width")
    _check_data_path(cfg)
    _check_device(cfg)
    _check_monitors(cfg)
    _check_cv(cfg)
    _check_lbfgs(cfg)
    _check_warmup(cfg)
    _check_lr_find(cfg)
    augmentation, data_node = cfg.get("augmentation"), cfg.get("data")
    if isinstance(augmentation, DictConfig) and isinstance(data_node, DictConfig):
        user = [k.partition(".")[2] for k in set_by_user if k.startswith("augmentation.")]
        refuse_label_changing(OmegaConf.to_container(augmentation, resolve=True), data_node.get("label_changing"),
                              user, data)


def check_thresholds(cfg: DictConfig) -> None:
    """diagnostics.thresholds is a mapping (its values' rule is diagnostics.thresholds.* in RULES)."""
    node = cfg.get("diagnostics")
    if not node:
        return
    thresholds = node.get("thresholds")
    if not isinstance(thresholds, DictConfig):
        raise UserError(f"diagnostics.thresholds={thresholds} is not valid; expected its keys (see "
                        "conf/diagnostics/default.yaml)")


UNREADABLE = "corrupt, truncated or not written by torch.save"


def torch_file(path: Path, key: str, shown: Any, expected: str) -> None:
    """UserError naming `key`=shown when the file at `path` cannot be one torch.save wrote: neither a zip archive
    (torch's format since 1.6) nor a pickle (its older format, which starts with pickle's PROTO opcode). Judged from the
    file's first and last bytes, so told before torch is imported; dlopt.models.weights.read_weights tells the rest."""
    with open(path, "rb") as file:
        legacy = file.read(1) == b"\x80"
    if not legacy and not zipfile.is_zipfile(path):
        raise not_a_torch_file(key, shown, UNREADABLE, expected)


def not_a_torch_file(key: str, shown: Any, why: str, expected: str) -> UserError:
    """The error for the file `key`=shown that torch.load cannot read, and why."""
    return UserError(f"{key}={shown} is not a file torch.load can read ({why}); expected {expected}")


def transfer_source(source: str) -> Path:
    """The file transfer.from names: a run folder's checkpoints/best.ckpt, or the file itself."""
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"transfer.from={source} does not exist; give {TRANSFER_SOURCES}")
    if not path.is_dir():
        torch_file(path, "transfer.from", source, TRANSFER_SOURCES)
        return path
    from dlopt.saved_run import cross_validation

    folds = cross_validation(path)
    if folds:
        raise UserError(f"transfer.from={source} is {folds}; give one, e.g. transfer.from={path / 'folds' / '0'}")
    if not (path / "checkpoints" / "best.ckpt").is_file():
        raise UserError(f"transfer.from={source} is not a dlopt run folder (it has no checkpoints/best.ckpt); "
                        f"give {TRANSFER_SOURCES}")
    return path / "checkpoints" / "best.ckpt"


def _check_monitors(cfg: DictConfig) -> None:
    """`monitor` and the callbacks' monitors name a metric that every epoch logs (dlopt.training.logged, what the
    Classifier logs), and validation runs for a val/ one."""
    if "monitor" not in cfg:
        return
    regularization = cfg.get("regularization")
    logged = monitorable(l1=isinstance(regularization, DictConfig) and bool(regularization.get("l1")))
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


def refuse_label_changing(knobs: Mapping[str, Any], label_changing: Any, set_by_user: Collection[str],
                          data: str | None) -> list[str]:
    """The rule of data.label_changing, the augmentation knobs whose transform changes what class a sample is:
    UserError unless it is a list of knobs (of `knobs`, the augmentation's), or when the user set one of them on
    (`set_by_user`: knob names from the command line); else the knobs of it that `knobs` switch on, which the
    augmentation's builder switches off (dlopt.data.augment.keeping_labels)."""
    names = [str(k) for k in knobs]
    if label_changing is not None and not (isinstance(label_changing, (list, tuple, ListConfig))
                                           and all(v in names for v in label_changing)):
        raise UserError(f"data.label_changing={label_changing} is not valid: expected a list of augmentation knobs "
                        f"whose transform changes the class, e.g. [hflip_p,vflip_p], or []; the knobs are "
                        f"{', '.join(names)}")
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


def _check_data_path(cfg: DictConfig) -> None:
    """The file or folder the data option reads (data.path of data=csv, data.root of data=image_folder) is there, and
    data=csv's table holds data.target, data.categorical and a number in every other cell (dlopt.data.table.read)."""
    target = str(cfg.data.get("_target_"))
    if target == "dlopt.data.table.csv":  # read checks data.path first
        from dlopt.data.table import read

        read(cfg.data.get("path"), cfg.data.get("target"), cfg.data.get("categorical"))
    elif target in PATHS:
        data_path(target, cfg.data.get(PATHS[target][0]))


# files that exist where a GPU's driver is loaded: NVIDIA's (Linux, containers with its toolkit), WSL's, AMD ROCm's
GPU_DRIVER_FILES = ("/dev/nvidiactl", "/dev/dxg", "/dev/kfd")


def _check_device(cfg: DictConfig) -> None:
    """trainer.accelerator=gpu|cuda on a Linux machine without a GPU driver, told without importing torch (which
    takes seconds, Lightning more); dlopt.training.processes.check_accelerator asks torch about the rest."""
    accelerator = str(cfg.trainer.get("accelerator"))
    if accelerator in ("gpu", "cuda") and sys.platform == "linux" and not any(map(os.path.exists, GPU_DRIVER_FILES)):
        raise UserError(f"trainer.accelerator={accelerator}: this machine has no {accelerator} device (no GPU "
                        f"driver: none of {', '.join(GPU_DRIVER_FILES)} exists); use trainer.accelerator=auto (or cpu)")


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
        if number(value) and value > 0:
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
    """dlopt tune-lr: no fast_dev_run, with which Lightning skips the range test, and lr_find.min_lr below max_lr
    (each a number > 0 by its value rule)."""
    node = cfg.get("lr_find")
    if not isinstance(node, DictConfig):
        return
    trainer = cfg.get("trainer")
    if isinstance(trainer, DictConfig) and trainer.get("fast_dev_run"):
        raise UserError(f"trainer.fast_dev_run={trainer.fast_dev_run} makes Lightning skip the range test: drop it")
    low, high = node.get("min_lr"), node.get("max_lr")
    if number(low) and number(high) and low >= high:
        raise UserError(f"lr_find.min_lr={low} is not below lr_find.max_lr={high}: "
                        f"the range test raises the lr from min_lr to a larger max_lr")
