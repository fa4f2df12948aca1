"""Bad inputs against the real `dlopt` command: does each one get a clear line, and leave nothing behind?

    python bench/bad_inputs.py                      # every case, 2 at a time (10-20 minutes)
    python bench/bad_inputs.py --only optimizer     # the cases whose name or arguments contain "optimizer"
    python bench/bad_inputs.py --list               # the cases, without running them

Each case is a list of `dlopt` arguments with one mistake, run by the installed `dlopt` command in
a fresh temporary folder of its own (the cwd), after the case's setup wrote the files it needs
there (a corrupt checkpoint, a CSV with a missing cell, a run folder that is not a run, ...).
`train` and `tune-lr` cases are made tiny (one epoch of two batches) unless the case sets those
keys itself. HYDRA_FULL_ERROR is removed from the environment and downloads fail at once (the
proxies point at a closed port). Every case names the string(s) that a good message contains on
one line (the key or file the mistake is in). Outcomes:

  one-line    exit code 2, no traceback, and a line holding every needle: what README promises
  traceback   "Traceback" in the output, or exit code 1 (an uncaught exception), or killed by a signal
  unclear     exit code 2 (or another code) without a traceback, but no line names the needle
  accepted    exit code 0: the bad input was accepted (accepted-but-wrong)
  timeout     still running after --timeout seconds (killed)
  +debris     independently: a failed run left new files or folders under outputs/ (unless the case
              says a run folder is expected there, like a NaN loss that keeps its log for a look),
              or a checkpoint ran code (a file named PWNED appeared anywhere in the folder)

The script reports; it always exits 0.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

TINY = ("trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1")
PWNED = "PWNED"  # the file a malicious checkpoint writes if dlopt runs its code

# A setup writes files into the case's folder (its argument) and may return {"name": "value"}:
# every "{name}" in the case's arguments is replaced by the value (e.g. {run}: a real run's folder).
Setup = Callable[[Path], Optional[dict]]


@dataclass
class Case:
    name: str
    args: list[str]
    needles: Union[str, tuple[str, ...]]  # a good message holds all of them on one line
    setup: Optional[Setup] = None
    debris_ok: bool = False  # a run folder may legitimately stay (a run that trained and then failed)
    tiny: bool = True  # add TINY to train / tune-lr (off for resume: the resumed run has its own config)
    told_at_exit_0: bool = False  # the documented answer finishes (exit 0) after a line naming the needle

    def __post_init__(self):
        if isinstance(self.needles, str):
            self.needles = (self.needles,)


# --- setup helpers ---------------------------------------------------------------------------------

def dlopt_exe() -> str:
    exe = Path(sys.executable).with_name("dlopt")
    found = str(exe) if exe.exists() else shutil.which("dlopt")
    if not found:
        sys.exit("bad_inputs.py: the dlopt command is not installed (activate the venv)")
    return found


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)  # it would turn every one-line error into a traceback
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env[key] = "http://127.0.0.1:9"  # any download fails at once, with or without a network
    for key in ("no_proxy", "NO_PROXY"):
        env.pop(key, None)
    return env


def files(contents: dict[str, Union[str, bytes]]) -> Setup:
    """Write these files (path -> text or bytes; a path ending in / is an empty folder)."""
    def setup(cwd: Path) -> None:
        for name, data in contents.items():
            path = cwd / name
            if name.endswith("/"):
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return setup


RANDOM_BYTES = random.Random(0).randbytes(4096)


def torch_file(name: str, make: Callable[[], object], truncate: bool = False) -> Setup:
    """torch.save(make()) to `name` (cut in half with truncate: a write that crashed)."""
    def setup(cwd: Path) -> None:
        import torch  # only here: the script itself needs no torch
        path = cwd / name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(make(), path)
        if truncate:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return setup


def tensors() -> dict:
    import torch
    return {"foo.weight": torch.zeros(4, 4), "foo.bias": torch.zeros(4)}


class Evil:
    """Unpickling this writes PWNED in the cwd: what weights_only=True must refuse."""

    def __reduce__(self):
        return (Path.write_text, (Path(PWNED), "a checkpoint ran code\n"))


_COMPOSE = threading.Lock()  # Hydra's compose API is global state: one thread at a time


def composed_train_config(*overrides: str) -> dict:
    """dlopt train's composed config as a plain dict (Hydra and dlopt's conf/, no torch)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from dlopt.apps import config_dir
    from dlopt.hydra_glue import register_resolvers

    register_resolvers()  # conf/ calls dlopt's resolvers by name
    with _COMPOSE, initialize_config_dir(config_dir=config_dir(), version_base=None):
        return OmegaConf.to_container(compose("train", overrides=[*TINY, *overrides]), resolve=True)


def config_checkpoint(change: Callable[[dict], None]) -> Callable[[], object]:
    """A checkpoint laid out as dlopt train writes it (state_dict, dlopt.config) with `change` made to
    the saved config, and no weights."""
    def make() -> dict:
        config = composed_train_config()
        change(config)
        return {"state_dict": {}, "dlopt": {"config": config, "history": []}}
    return make


def write_text_target(config: dict) -> None:
    # instantiating model (no extra arguments) would call Path("PWNED").write_text("...")
    config["model"] = {"_target_": "pathlib.Path.write_text",
                       "_args_": [{"_target_": "pathlib.Path", "_args_": [PWNED]}, "a saved config ran code\n"]}


def real_run(change: Optional[Callable[[Path], None]] = None, *overrides: str) -> Setup:
    """A real tiny `dlopt train` run in the case's folder, then `change(run_folder)`; {run} is its folder."""
    def setup(cwd: Path) -> dict:
        argv = [dlopt_exe(), "train", *TINY, *overrides]
        proc = subprocess.run(argv, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=300)
        runs = sorted(p.parent for p in (cwd / "outputs" / "train").glob("*/*/.hydra"))
        if proc.returncode != 0 or len(runs) != 1:
            lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()] or ["(no output)"]
            why = next((line for line in reversed(lines) if "ERROR" in line or "Error" in line), lines[-1])
            raise RuntimeError(f"the setup run `dlopt {' '.join(argv[1:])}` failed (exit {proc.returncode}): "
                               f"{_LOG_PREFIX.sub('', why)}")
        if change:
            change(runs[0])
        return {"run": str(runs[0].relative_to(cwd))}
    return setup


def corrupt(name: str) -> Callable[[Path], None]:
    return lambda run: (run / "checkpoints" / name).write_bytes(RANDOM_BYTES[:512])


def evil_pickle(name: str) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        import torch
        torch.save({"state_dict": {}, "x": Evil()}, run / "checkpoints" / name)
    return change


def table(name: str = "t.csv", rows: int = 60, classes: int = 3,
          cell: Optional[tuple[int, str, str]] = None, header_only: bool = False) -> Setup:
    """A CSV with columns height, weight (numbers) and species (the label); cell=(row, column, text)
    replaces one cell."""
    columns = ["height", "weight", "species"]
    rng = random.Random(0)
    lines = [",".join(columns)]
    for i in range(0 if header_only else rows):
        row = {"height": f"{rng.uniform(1, 2):.3f}", "weight": f"{rng.uniform(40, 90):.1f}",
               "species": "abc"[i % classes]}
        if cell and cell[0] == i:
            row[cell[1]] = cell[2]
        lines.append(",".join(row[c] for c in columns))
    return files({name: "\n".join(lines) + "\n"})


def images(bad: bool = True) -> Setup:
    """imgs/cat and imgs/dog with ten 8x8 PNGs each, and (bad) imgs/dog/bad.png that is not an image."""
    def setup(cwd: Path) -> None:
        from PIL import Image
        rng = random.Random(0)
        for label in ("cat", "dog"):
            (cwd / "imgs" / label).mkdir(parents=True)
            for i in range(10):
                pixels = bytes(rng.randrange(256) for _ in range(8 * 8 * 3))
                Image.frombytes("RGB", (8, 8), pixels).save(cwd / "imgs" / label / f"{i}.png")
        if bad:
            (cwd / "imgs" / "dog" / "bad.png").write_bytes(RANDOM_BYTES[:300])
    return setup


def experiment(text: str) -> Setup:
    return files({"myconf/experiment/mine.yaml": text})


def delete(name: str) -> Callable[[Path], None]:
    return lambda run: shutil.rmtree(run / name)


def killed(change: Callable[[Path], None]) -> Callable[[Path], None]:
    """As if the run had been killed before it finished (no metrics.json), then `change`."""
    def apply(run: Path) -> None:
        (run / "metrics.json").unlink()
        change(run)
    return apply


# --- the cases -------------------------------------------------------------------------------------

CASES: list[Case] = []

# Unknown group options: the message should name group=option (and list the valid ones).
for override in ["model=resnot", "optimizer=adamx", "scheduler=cosin", "augmentation=stronger",
                 "regularization=l3", "data=digit", "trainer=dpp", "callbacks=defualt", "logger=tensorbord",
                 "search=bays", "clip=agcc", "experiment=exampel"]:
    CASES.append(Case(f"option {override}", ["train", override], override))
CASES += [
    Case("option tune-lr model=resnot", ["tune-lr", "model=resnot"], "model=resnot"),
    Case("option hydra/launcher=jobib", ["train", "-m", "hydra/launcher=jobib", "optimizer.lr=0.1,0.01"], "jobib"),
    Case("option callbacks list with a typo", ["train", "callbacks=[default,emma]"], "emma"),
]

# Misspelt keys: the message should name the full key (and suggest the right one).
for override, key in [
    ("model.dept=3", "model.dept"), ("trainer.max_epoch=3", "trainer.max_epoch"),
    ("data.batchsize=4", "data.batchsize"), ("optimizer.learning_rate=0.1", "optimizer.learning_rate"),
    ("augmentation.flip_p=0.5", "augmentation.flip_p"), ("regularization.weight_decai=0.1", "regularization.weight_decai"),
    ("scheduler.T_maxx=3", "scheduler.T_maxx"), ("callbacks.early_stopping.patiense=3", "callbacks.early_stopping.patiense"),
    ("transfer.strategi=finetune", "transfer.strategi"), ("monitr=val/acc", "monitr"),
    ("clip.factr=0.1", "clip.factr"),
]:
    CASES.append(Case(f"key {override}", ["train", override], key))
CASES += [
    Case("key +model.foo=1 (a new key the model does not take)", ["train", "+model.foo=1"], "model.foo"),
    Case("key search.n_trial=3", ["train", "search=random", "search.n_trial=3"], "search.n_trial"),
    Case("key lr_find.min_l (tune-lr)", ["tune-lr", "lr_find.min_l=1e-5"], "lr_find.min_l"),
    Case("key eval runn=", ["eval", "runn=x"], "runn"),
    Case("key of 5000 characters", ["train", "k" * 5000 + "=1"], "kkkkkkkkkk"),
    Case("key 5000 characters under model", ["train", "model." + "k" * 5000 + "=1"], "model.kkkkkkkkkk"),
]

# Wrong types and ranges of the knobs in dlopt/checks/values.py RULES and CHOICES: (overrides, the key to name).
VALUES = [
    ("optimizer.lr=-1", "optimizer.lr"), ("optimizer.lr=0", "optimizer.lr"), ("optimizer.lr=abc", "optimizer.lr"),
    ("regularization.weight_decay=-0.1", "regularization.weight_decay"),
    ("regularization.l1=-1", "regularization.l1"),
    ("regularization.dropout=1.5", "regularization.dropout"), ("model.dropout=1", "model.dropout"),
    ("optimizer=momentum optimizer.momentum=1.5", "optimizer.momentum"),
    ("optimizer=rmsprop optimizer.alpha=-1", "optimizer.alpha"),
    ("scheduler=step scheduler.gamma=0", "scheduler.gamma"), ("scheduler=exponential scheduler.gamma=2", "scheduler.gamma"),
    ("scheduler=plateau scheduler.factor=1", "scheduler.factor"),
    ("scheduler=plateau scheduler.patience=-1", "scheduler.patience"),
    ("scheduler=step scheduler.step_size=0", "scheduler.step_size"),
    ("clip=agc clip.factor=-1", "clip.factor"), ("clip=agc clip.eps=0", "clip.eps"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val"),
    ("trainer.gradient_clip_val=abc", "trainer.gradient_clip_val"),
    ("trainer.gradient_clip_algorithm=clip", "trainer.gradient_clip_algorithm"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches"),
    ("trainer.accumulate_grad_batches=1.5", "trainer.accumulate_grad_batches"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps"),
    ("trainer.max_epochs=0", "trainer.max_epochs"), ("trainer.max_epochs=-1", "trainer.max_epochs"),
    ("trainer.precision=8", "trainer.precision"),
    ("callbacks.early_stopping.min_delta=-1", "callbacks.early_stopping.min_delta"),
    ("callbacks.early_stopping.patience=-1", "callbacks.early_stopping.patience"),
    ("callbacks.early_stopping.check_finite=maybe", "callbacks.early_stopping.check_finite"),
    ("callbacks.progress_bar.refresh_rate=-1", "callbacks.progress_bar.refresh_rate"),
    ("callbacks=[default,ema] callbacks.ema.decay=1.5", "callbacks.ema.decay"),
    ("callbacks=[default,ema] callbacks.ema.update_every_n_steps=0", "callbacks.ema.update_every_n_steps"),
    ("callbacks=[default,swa] callbacks.swa.start_epoch=-1", "callbacks.swa.start_epoch"),
    ("model.compile=yes", "model.compile"),
    ("model.depth=0", "model.depth"), ("model.depth=2.5", "model.depth"), ("model.width=0", "model.width"),
    ("model.kernel_size=0", "model.kernel_size"), ("model.negative_slope=-1", "model.negative_slope"),
    ("model.residual=maybe", "model.residual"), ("model.attention=2", "model.attention"),
    ("model.activation=relux", "model.activation"), ("model.norm=batchnorm", "model.norm"),
    ("model.pool=min", "model.pool"), ("model.init=he", "model.init"),
    ("model.attention=true model.heads=5", "model.heads"),
    ("model=vit model.heads=0", "model.heads"), ("model=vit model.heads=3", "model.heads"),
    ("model=vit model.patch=0", "model.patch"), ("model=vit model.patch=100", "model.patch"),
    ("model=vit model.mlp_ratio=0", "model.mlp_ratio"),
    ("model=resnet model.arch=resnet19", "model.arch"),
    ("augmentation.hflip_p=2", "augmentation.hflip_p"), ("augmentation.vflip_p=-0.1", "augmentation.vflip_p"),
    ("augmentation.erasing_p=1.5", "augmentation.erasing_p"), ("augmentation.rotate_deg=270", "augmentation.rotate_deg"),
    ("augmentation.translate=1", "augmentation.translate"),
    ("augmentation.scale=[1.1,0.9]", "augmentation.scale"), ("augmentation.scale=0.9", "augmentation.scale"),
    ("augmentation.resized_crop=[0.5,1.5]", "augmentation.resized_crop"),
    ("augmentation.color_jitter=2", "augmentation.color_jitter"), ("augmentation.noise_std=-1", "augmentation.noise_std"),
    ("augmentation.crop_padding=-1", "augmentation.crop_padding"), ("augmentation.policy=autoaug", "augmentation.policy"),
    ("augmentation.mixup_alpha=-1", "augmentation.mixup_alpha"), ("augmentation.cutmix_alpha=-1", "augmentation.cutmix_alpha"),
    ("regularization.label_smoothing=1", "regularization.label_smoothing"),
    ("regularization.exclude_norm_bias=2", "regularization.exclude_norm_bias"),
    ("data.batch_size=0", "data.batch_size"), ("data.batch_size=abc", "data.batch_size"),
    ("data.num_workers=-1", "data.num_workers"),
    ("data.val_fraction=1", "data.val_fraction"), ("data.test_fraction=0", "data.test_fraction"),
    ("data.fraction=0", "data.fraction"), ("data.fraction=0.001", "data.fraction"),
    ("data.normalize=zscore", "data.normalize"), ("data.class_weights=auto", "data.class_weights"),
    ("data.split_seed=abc", "data.split_seed"),
    ("data=mnist1d data.num_samples=0", "data.num_samples"),
    ("data=synthetic data.num_classes=1", "data.num_classes"),
    ("data=synthetic data.shape=[0]", "data.shape"), ("data=synthetic data.shape=abc", "data.shape"),
    ("data=image_folder data.root=. data.image_size=0", "data.image_size"),
    ("seed=abc", "seed"), ("seed=1.5", "seed"),
    ("mode=maximum", "mode"),
    ("transfer.strategy=freeze", "transfer.strategy"),
    ("transfer.backbone_lr_scale=2", "transfer.backbone_lr_scale"),
    ("transfer.unfreeze_at_epoch=-1", "transfer.unfreeze_at_epoch"),
    ("search=random search.n_trials=2 search.n_jobs=0", "search.n_jobs"),
    ("search=bayes search.n_trials=2 search.startup_trials=-1", "search.startup_trials"),
    ("search=bayes search.n_trials=2 search.warmup_epochs=-1", "search.warmup_epochs"),
    ("search=genetic search.n_trials=2 search.population=1", "search.population"),
]
CASES += [Case(f"value {overrides}", ["train", *overrides.split()], key) for overrides, key in VALUES]

# dlopt issue 12, one by one.
CASES += [
    Case("issue12 optimizer.betas=[0.9]", ["train", "optimizer.betas=[0.9]"], "optimizer.betas"),
    Case("issue12 optimizer.betas=[1.5,0.999]", ["train", "optimizer.betas=[1.5,0.999]"], "optimizer.betas"),
    Case("issue12 scheduler.T_max=-5", ["train", "scheduler.T_max=-5"], "scheduler.T_max"),
    Case("issue12 trainer.limit_train_batches=0", ["train", "trainer.limit_train_batches=0"],
         "trainer.limit_train_batches"),
    Case("issue12 trainer.accelerator=gpu (no GPU here)", ["train", "trainer.accelerator=gpu"], "trainer.accelerator"),
    Case("issue12 trainer.devices=64", ["train", "trainer.devices=64"], "trainer.devices"),
    Case("issue12 unquoted non-ASCII path", ["train", "data=csv", "data.path=/tmp/ünï.csv", "data.target=y"], "ünï.csv"),
    Case("issue12 optimizer.lr=interval(0.1 (unbalanced)", ["train", "optimizer.lr=interval(0.1"], "optimizer.lr"),
    Case("issue12 monitor=val/accc", ["train", "monitor=val/accc"], "val/accc"),
    Case("issue12 -m optimizer=sgd,adamx (bad sweep list)", ["train", "-m", "optimizer=sgd,adamx"], "adamx"),
    Case("issue12 YAML syntax error in a --config-dir experiment",
         ["train", "--config-dir", "myconf", "experiment=broken"], "broken.yaml",
         files({"myconf/experiment/broken.yaml": "# @package _global_\nmodel:\n  depth: [3\n  width: 8\n"})),
    Case("issue12 eval run=/nonexistent", ["eval", "run=/nonexistent"], "/nonexistent"),
    Case("issue12 eval run= a folder that is not a run", ["eval", "run=notarun"], "notarun",
         files({"notarun/notes.txt": "not a run\n"})),
    Case("issue12 eval ckpt_path= a corrupt (truncated) checkpoint", ["eval", "ckpt_path=corrupt.ckpt"], "corrupt.ckpt",
         torch_file("corrupt.ckpt", tensors, truncate=True)),
    Case("issue12 eval ckpt_path= random bytes", ["eval", "ckpt_path=random.ckpt"], "random.ckpt",
         files({"random.ckpt": RANDOM_BYTES})),
    Case("issue12 eval ckpt_path= a dict without 'dlopt'", ["eval", "ckpt_path=plain.ckpt"], "plain.ckpt",
         torch_file("plain.ckpt", lambda: {"state_dict": tensors()})),
    Case("issue12 eval ckpt_path= saved config with _target_ pathlib.Path.write_text",
         ["eval", "ckpt_path=evil.ckpt"], "evil.ckpt",
         torch_file("evil.ckpt", config_checkpoint(write_text_target))),
    Case("issue12 train resume= a missing folder", ["train", "resume=missing_run"], "missing_run", tiny=False),
    Case("issue12 train resume= a run without checkpoints", ["train", "resume={run}"], "last.ckpt",
         real_run(delete("checkpoints")), tiny=False),
    Case("issue12 train resume= a corrupt last.ckpt", ["train", "resume={run}"], "last.ckpt",
         real_run(killed(corrupt("last.ckpt"))), tiny=False),
    Case("issue12 train transfer.from= a missing file", ["train", "transfer.from=missing.ckpt"], "missing.ckpt"),
    Case("issue12 train transfer.from= a corrupt file", ["train", "transfer.from=corrupt.ckpt"], "corrupt.ckpt",
         torch_file("corrupt.ckpt", tensors, truncate=True)),
    Case("issue12 outputs is a plain file (train)", ["train"], "outputs", files({"outputs": "a file\n"})),
    Case("issue12 hydra.run.dir under a plain file", ["train", "hydra.run.dir=blocker/run"], "blocker",
         files({"blocker": "a file\n"})),
]

# Saved runs and checkpoints that are not what they should be.
CASES += [
    Case("eval with neither run= nor ckpt_path=", ["eval"], "ckpt_path"),
    Case("eval with both run= and ckpt_path=", ["eval", "run=r", "ckpt_path=c.ckpt"], "ckpt_path",
         files({"r/": "", "c.ckpt": RANDOM_BYTES})),
    Case("eval split=train", ["eval", "split=train", "ckpt_path=c.ckpt"], "split", files({"c.ckpt": RANDOM_BYTES})),
    Case("eval ckpt_path= a missing file", ["eval", "ckpt_path=missing.ckpt"], "missing.ckpt"),
    Case("eval ckpt_path= a folder", ["eval", "ckpt_path=adir"], "adir", files({"adir/": ""})),
    Case("eval ckpt_path= an empty file", ["eval", "ckpt_path=empty.ckpt"], "empty.ckpt", files({"empty.ckpt": b""})),
    Case("eval ckpt_path= a pickle that runs code", ["eval", "ckpt_path=evil.ckpt"], "evil.ckpt",
         torch_file("evil.ckpt", lambda: {"state_dict": {}, "dlopt": {"config": {}}, "x": Evil()})),
    Case("eval ckpt_path= a saved config that is empty", ["eval", "ckpt_path=empty_cfg.ckpt"], "empty_cfg.ckpt",
         torch_file("empty_cfg.ckpt", config_checkpoint(lambda c: c.clear()))),
    Case("eval ckpt_path= a saved config with data._target_ os.getcwd", ["eval", "ckpt_path=odd.ckpt"], "odd.ckpt",
         torch_file("odd.ckpt", config_checkpoint(lambda c: c["data"].update(_target_="os.getcwd")))),
    Case("eval ckpt_path= a dlopt layout with no weights", ["eval", "ckpt_path=noweights.ckpt"], "noweights.ckpt",
         torch_file("noweights.ckpt", config_checkpoint(lambda c: None))),
    Case("eval run= a run whose best.ckpt is corrupt", ["eval", "run={run}"], "best.ckpt",
         real_run(corrupt("best.ckpt"))),
    Case("eval run= a run without checkpoints", ["eval", "run={run}"], "best.ckpt", real_run(delete("checkpoints"))),
    Case("eval outputs is a plain file", ["eval", "ckpt_path=c.ckpt"], "outputs",
         files({"outputs": "a file\n", "c.ckpt": RANDOM_BYTES})),
    Case("resume= an empty folder", ["train", "resume=emptyrun"], "emptyrun", files({"emptyrun/": ""}), tiny=False),
    Case("resume= with -m", ["train", "-m", "resume=missing_run"], "resume=", tiny=False),
    Case("resume= a finished run, no overrides", ["train", "resume={run}"], "resume=", real_run(), tiny=False),
    Case("resume= a run, with model=resnot", ["train", "resume={run}", "model=resnot"], "model=resnot",
         real_run(), tiny=False),
    Case("resume= a run, with model.dept=3", ["train", "resume={run}", "model.dept=3"], "model.dept",
         real_run(), tiny=False),
    Case("resume= a last.ckpt that is a pickle running code", ["train", "resume={run}", "trainer.max_epochs=2"],
         "last.ckpt", real_run(killed(evil_pickle("last.ckpt"))), tiny=False),
    Case("transfer.from= random bytes", ["train", "transfer.from=random.ckpt"], "random.ckpt",
         files({"random.ckpt": RANDOM_BYTES})),
    Case("transfer.from= a folder that is not a run", ["train", "transfer.from=notarun"], "notarun",
         files({"notarun/notes.txt": "not a run\n"})),
    Case("transfer.from= a state_dict of other tensors", ["train", "transfer.from=other.pt"], "transfer.from=other.pt",
         torch_file("other.pt", tensors)),
    Case("transfer.from= a pickle that runs code", ["train", "transfer.from=evil.ckpt"], "evil.ckpt",
         torch_file("evil.ckpt", lambda: {"state_dict": {}, "x": Evil()})),
    Case("transfer.from= a dlopt layout whose saved config writes a file", ["train", "transfer.from=evil.ckpt"],
         "evil.ckpt", torch_file("evil.ckpt", config_checkpoint(write_text_target))),
    Case("transfer.from= an mlp run into a cnn", ["train", "transfer.from={run}"], "model",
         real_run(None, "model=mlp")),
    Case("model=resnet model.weights= a missing file", ["train", "model=resnet", "model.weights=missing.pth"],
         "missing.pth"),
    Case("model=resnet model.weights= random bytes", ["train", "model=resnet", "model.weights=random.pth"],
         "random.pth", files({"random.pth": RANDOM_BYTES})),
]

# Output folders where they cannot be (running as root, chmod cannot make a folder unwritable: a file
# stands where a folder should be instead).
CASES += [
    Case("outputs is a plain file (tune-lr)", ["tune-lr"], "outputs", files({"outputs": "a file\n"})),
    Case("outputs/train is a plain file", ["train"], "outputs/train", files({"outputs/train": "a file\n"})),
    Case("hydra.run.dir under a plain file inside outputs", ["train", "hydra.run.dir=outputs/blocker/run"],
         "outputs/blocker", files({"outputs/blocker": "a file\n"})),
    # dlopt sets logger.save_dir to the run folder: a value given for it is refused, not silently replaced
    Case("logger.save_dir under a plain file", ["train", "+logger.save_dir=blocker/tb"], "logger.save_dir",
         files({"blocker": "a file\n"})),
    Case("-m sweep dir under a plain file", ["train", "-m", "optimizer.lr=0.1,0.01", "hydra.sweep.dir=blocker/s"],
         "blocker", files({"blocker": "a file\n"})),
]

# Data mistakes.
CASES += [
    Case("data=image_folder without data.root", ["train", "data=image_folder"], "data.root"),
    Case("data=image_folder data.root= a missing folder", ["train", "data=image_folder", "data.root=missing_dir"],
         "missing_dir"),
    Case("data=image_folder data.root= an empty folder", ["train", "data=image_folder", "data.root=imgs"], "imgs",
         files({"imgs/": ""})),
    Case("data=image_folder data.root= a folder of text files", ["train", "data=image_folder", "data.root=imgs"],
         "imgs", files({"imgs/cat/a.txt": "x\n", "imgs/dog/b.txt": "y\n"})),
    Case("data=image_folder with a corrupt image",
         ["train", "data=image_folder", "data.root=imgs", "data.image_size=8", "data.num_workers=0"], "bad.png",
         images()),
    Case("data=image_folder data.classes= a class it lacks",
         ["train", "data=image_folder", "data.root=imgs", "data.image_size=8", "data.num_workers=0",
          "data.classes=[cat,cow]"], "cow", images(bad=False)),
    Case("data=csv without data.path", ["train", "data=csv", "model=mlp"], "data.path"),
    Case("data=csv without data.target", ["train", "data=csv", "model=mlp", "data.path=t.csv"], "data.target",
         table()),
    Case("data=csv data.path= a missing file", ["train", "data=csv", "data.path=missing.csv", "data.target=species"],
         "missing.csv"),
    Case("data=csv data.target= a column it lacks", ["train", "data=csv", "data.path=t.csv", "data.target=label"],
         "label", table()),
    Case("data=csv a missing cell", ["train", "data=csv", "model=mlp", "data.path=t.csv", "data.target=species"],
         "weight", table(cell=(10, "weight", ""))),
    Case("data=csv a cell that is not a number",
         ["train", "data=csv", "model=mlp", "data.path=t.csv", "data.target=species"], "height",
         table(cell=(20, "height", "tall"))),
    Case("data=csv a missing label", ["train", "data=csv", "model=mlp", "data.path=t.csv", "data.target=species"],
         "species", table(cell=(5, "species", ""))),
    Case("data=csv only a header", ["train", "data=csv", "model=mlp", "data.path=t.csv", "data.target=species"],
         "t.csv", table(header_only=True)),
    Case("data=csv one class only", ["train", "data=csv", "model=mlp", "data.path=t.csv", "data.target=species"],
         "species", table(classes=1)),
    Case("data=csv data.categorical= a column it lacks",
         ["train", "data=csv", "model=mlp", "data.path=t.csv", "data.target=species", "data.categorical=[color]"],
         "color", table()),
    Case("data=csv data.path= random bytes", ["train", "data=csv", "data.path=t.csv", "data.target=species"],
         "t.csv", files({"t.csv": RANDOM_BYTES})),
    Case("data.classes=[0,12]", ["train", "data.classes=[0,12]"], "data.classes"),
    Case("data.classes=[3] (one class)", ["train", "data.classes=[3]"], "data.classes"),
    Case("data.classes=abc", ["train", "data.classes=abc"], "data.classes"),
    Case("data=mnist offline", ["train", "data=mnist", "data.root=mnist_data"], "data.root"),
    Case("data=cifar10 data.download=false", ["train", "data=cifar10", "data.root=cifar", "data.download=false"],
         "data.root"),
    Case("data=synthetic vectors with model=cnn", ["train", "data=synthetic", "data.shape=[20]", "model=cnn"],
         "model"),
    Case("data=synthetic vectors with model=resnet", ["train", "data=synthetic", "data.shape=[20]", "model=resnet"],
         "model"),
]

# Augmentation that does not fit the data: name every such key and the override that switches it off.
CASES += [
    Case("augmentation.color_jitter on mnist1d", ["train", "data=mnist1d", "augmentation.color_jitter=0.2"],
         "augmentation.color_jitter"),
    Case("augmentation=strong on mnist1d", ["train", "data=mnist1d", "augmentation=strong"],
         "augmentation.rotate_deg=0"),
    Case("augmentation=randaugment on mnist1d", ["train", "data=mnist1d", "augmentation=randaugment"],
         "augmentation.policy"),
    Case("augmentation.rotate_deg on vectors", ["train", "data=synthetic", "data.shape=[20]", "model=mlp",
                                                "augmentation.rotate_deg=10"], "augmentation.rotate_deg"),
    Case("augmentation=cutmix on vectors", ["train", "data=synthetic", "data.shape=[20]", "model=mlp",
                                            "augmentation=cutmix"], "augmentation.cutmix_alpha"),
]

# Search mistakes (search.n_trials=2 everywhere it is not the mistake, so an accepted one stays short).
CASES += [
    Case("search n_trials=0", ["train", "-m", "search=bayes", "search.n_trials=0"], "search.n_trials"),
    Case("search n_trials=null with search=random", ["train", "search=random", "search.n_trials=null"],
         "search.n_trials"),
    Case("search sampler=tpee", ["train", "search=bayes", "search.n_trials=2", "search.sampler=tpee"],
         "search.sampler"),
    Case("search pruner=medain", ["train", "search=bayes", "search.n_trials=2", "search.pruner=medain"],
         "search.pruner"),
    Case("search storage=foo://x", ["train", "search=random", "search.n_trials=2", "search.storage=foo://x"],
         "search.storage"),
    Case("search an empty space", ["train", "search=random", "search.n_trials=2", "search.params=null"],
         "search.params"),
    Case("search grid with an interval", ["train", "search=grid", "search.params=null", "optimizer.lr=interval(0.001,0.1)"],
         "optimizer.lr"),
    Case("search interval low > high", ["train", "search=random", "search.n_trials=2", "search.params=null",
                                        "optimizer.lr=interval(0.1,0.01)"], "optimizer.lr"),
    Case("search an unknown key in the space", ["train", "search=random", "search.n_trials=2", "search.params=null",
                                                "model.dept=range(1,3)"], "model.dept"),
    Case("search an unknown option in the space", ["train", "search=random", "search.n_trials=2", "search.params=null",
                                                   "optimizer=choice(sgd,adamx)"], "adamx"),
    Case("search with trainer=ddp", ["train", "search=random", "search.n_trials=1", "trainer=ddp"], "trainer.devices"),
    Case("sweep -m with trainer=ddp", ["train", "-m", "trainer=ddp", "optimizer.lr=0.1,0.01"], "trainer.devices"),
    # the run with the bad value fails with its line and error.txt, the sweep goes on (README: When something is wrong)
    Case("sweep -m with a bad value in the list", ["train", "-m", "optimizer.lr=0.1,-1"], "optimizer.lr=-1 is not valid",
         debris_ok=True, told_at_exit_0=True),
]

# tune-lr.
CASES += [
    Case("tune-lr lr_find.min_lr=0", ["tune-lr", "lr_find.min_lr=0"], "lr_find.min_lr"),
    Case("tune-lr lr_find.min_lr=1 lr_find.max_lr=0.1", ["tune-lr", "lr_find.min_lr=1", "lr_find.max_lr=0.1"],
         "lr_find.min_lr"),
    Case("tune-lr lr_find.max_lr=abc", ["tune-lr", "lr_find.max_lr=abc"], "lr_find.max_lr"),
    Case("tune-lr trainer.fast_dev_run=1", ["tune-lr", "trainer.fast_dev_run=1"], "trainer.fast_dev_run"),
    Case("tune-lr +trainer.fast_dev_run=1", ["tune-lr", "+trainer.fast_dev_run=1"], "trainer.fast_dev_run"),
    Case("tune-lr lr_find.num_training=1", ["tune-lr", "lr_find.num_training=1"], "lr_find.num_training"),
    Case("tune-lr lr_find.schedule=cosine", ["tune-lr", "lr_find.schedule=cosine"], "lr_find.schedule"),
    Case("tune-lr optimizer.lr=-1", ["tune-lr", "optimizer.lr=-1"], "optimizer.lr"),
]

# Your own experiments (--config-dir).
CASES += [
    Case("--config-dir a missing folder", ["train", "--config-dir", "nodir", "experiment=mine"], "nodir"),
    Case("--config-dir without the experiment", ["train", "--config-dir", "myconf", "experiment=mine"],
         "experiment=mine", files({"myconf/experiment/other.yaml": "# @package _global_\n"})),
    Case("experiment with a misspelt key", ["train", "--config-dir", "myconf", "experiment=mine"], "dept",
         experiment("# @package _global_\nmodel:\n  dept: 4\n")),
    Case("experiment overriding an unknown option", ["train", "--config-dir", "myconf", "experiment=mine"], "resnot",
         experiment("# @package _global_\ndefaults:\n  - override /model: resnot\n")),
    Case("experiment that is a list", ["train", "--config-dir", "myconf", "experiment=mine"], "experiment",
         experiment("- model: mlp\n")),
    Case("experiment that is a list, with its package line", ["train", "--config-dir", "myconf", "experiment=mine"],
         "experiment/mine", experiment("# @package _global_\n- model: mlp\n")),
    Case("experiment without its package line", ["train", "--config-dir", "myconf", "experiment=mine"],
         ("experiment", "# @package _global_"), experiment("model:\n  depth: 2\n")),
    Case("experiment with a bad value", ["train", "--config-dir", "myconf", "experiment=mine"], "optimizer.lr",
         experiment("# @package _global_\noptimizer:\n  lr: -3\n")),
]

# Other command-line mistakes: Hydra's flags and grammar, deleted groups, targets.
CASES += [
    Case("unknown command dlopt trian", ["trian"], "trian"),
    Case("train -m --cfg job", ["train", "-m", "--cfg", "job"], "--cfg"),
    Case("train -m --info", ["train", "-m", "--info"], "--info"),
    Case("train --cfg jbo", ["train", "--cfg", "jbo"], "jbo"),
    Case("train --config-name nope", ["train", "--config-name", "nope"], "nope"),
    Case("train model= (empty)", ["train", "model="], "model"),
    Case("train model (no =)", ["train", "model"], "model"),
    Case("train =3", ["train", "=3"], "=3"),
    Case("train ~model", ["train", "~model"], "model"),
    Case("train ~optimizer", ["train", "~optimizer"], "optimizer"),
    Case("train ~data", ["train", "~data"], "data"),
    Case("train optimizer._target_=torch.optim.Adamm", ["train", "optimizer._target_=torch.optim.Adamm"], "Adamm"),
    Case("train trainer.strategy=foo", ["train", "trainer.strategy=foo"], "trainer.strategy"),
    Case("train +trainer.strategy=foo", ["train", "+trainer.strategy=foo"], "trainer.strategy"),
    Case("train trainer=ddp trainer.devices=3 (2 cores)", ["train", "trainer=ddp", "trainer.devices=3"],
         "trainer.devices"),
    # Lightning runs AMP as bf16 on the CPU; dlopt says so (Lightning's own warning is in the log file)
    Case("train trainer.precision=16-mixed on the CPU", ["train", "trainer.precision=16-mixed"],
         ("trainer.precision=16-mixed runs as precision=bf16-mixed",), told_at_exit_0=True),
    Case("train callbacks.checkpoint.monitor=val/nope", ["train", "callbacks.checkpoint.monitor=val/nope"], "val/nope"),
]

# Losses that blow up: the run trained, so its folder stays with the log (debris_ok).
DIVERGE = ["model=mlp", "model.norm=none", "optimizer=sgd", "optimizer.lr=1e6", "trainer.limit_train_batches=10"]
CASES += [
    Case("NaN loss in the first epoch", ["train", *DIVERGE], "optimizer.lr", debris_ok=True),
    Case("NaN loss with check_finite=false", ["train", *DIVERGE, "callbacks.early_stopping.check_finite=false"],
         "optimizer.lr", debris_ok=True),
]


# Diagnostics and dlopt doctor (issue 13).
def replace_file(name: str, data: str) -> Callable[[Path], None]:
    return lambda run: (run / name).write_text(data)


CASES += [
    Case("issue13 diagnostics=nope", ["train", "diagnostics=nope"], "diagnostics=nope"),
    Case("issue13 diagnostics.every_n_steps=0", ["train", "diagnostics.every_n_steps=0"], "diagnostics.every_n_steps"),
    Case("issue13 diagnostics.every_n_steps=-3", ["train", "diagnostics.every_n_steps=-3"], "diagnostics.every_n_steps"),
    Case("issue13 diagnostics.thresholds.dead=abc", ["train", "diagnostics.thresholds.dead=abc"],
         "diagnostics.thresholds.dead"),
    Case("issue13 diagnostics.histograms=sometimes", ["train", "diagnostics.histograms=sometimes"],
         "diagnostics.histograms"),
    Case("issue13 doctor with no run", ["doctor"], "run="),
    Case("issue13 doctor run= a missing folder", ["doctor", "run=missing_run"], "missing_run"),
    Case("issue13 doctor run= a folder that is not a run", ["doctor", "run=notarun"], "notarun",
         files({"notarun/notes.txt": "not a run\n"})),
    Case("issue13 doctor remedies=0", ["doctor", "run={run}", "remedies=0"], "remedies", real_run()),
    Case("issue13 doctor try=maybe", ["doctor", "run={run}", "try=maybe"], "try", real_run()),
    Case("issue13 doctor diagnostics.thresholds.dead=-1", ["doctor", "run={run}", "diagnostics.thresholds.dead=-1"],
         "diagnostics.thresholds.dead", real_run()),
    Case("issue13 doctor run= a run whose metrics.json is cut short", ["doctor", "run={run}"], "metrics.json",
         real_run(replace_file("metrics.json", '{"objective": 0.5,'))),
    Case("issue13 doctor run= a run whose history.json is a mapping", ["doctor", "run={run}"], "history.json",
         real_run(replace_file("history.json", '{"epoch": 0}'))),
    Case("issue13 doctor run= a run whose diagnostics.jsonl holds junk", ["doctor", "run={run}"], "diagnostics.jsonl",
         real_run(replace_file("diagnostics.jsonl", 'junk\n{"kind": "step"}\n'))),
    Case("issue13 doctor run= a run whose config calls a resolver", ["doctor", "run={run}"], "config.yaml",
         real_run(replace_file(".hydra/config.yaml", "seed: ${dlopt.fresh:'/tmp/x'}\n"))),
]

# dlopt explain (issue 14): each case explains a real tiny run (or names none) with one mistake.
def both(*setups: Setup) -> Setup:
    """The setups one after the other; their {name} values together."""
    def setup(cwd: Path) -> dict:
        values: dict = {}
        for one in setups:
            values.update(one(cwd) or {})
        return values
    return setup


CSV_RUN = both(table(), real_run(None, "data=csv", "data.path=t.csv", "data.target=species", "model=mlp"))
CASES += [
    Case("issue14 explain method=lyme", ["explain", "run={run}", "method=lyme"], "method=lyme", real_run()),
    Case("issue14 explain method=[]", ["explain", "run={run}", "method=[]"], "method=", real_run()),
    Case("issue14 explain explain.samples=0", ["explain", "run={run}", "explain.samples=0"], "explain.samples",
         real_run()),
    Case("issue14 explain explain.samples=-3", ["explain", "run={run}", "explain.samples=-3"], "explain.samples",
         real_run()),
    Case("issue14 explain explain.samples=100000 (more than the split)",
         ["explain", "run={run}", "explain.samples=100000"], "explain.samples", real_run()),
    Case("issue14 explain explain.target=99 (digits has 10 classes)", ["explain", "run={run}", "explain.target=99"],
         "explain.target", real_run()),
    Case("issue14 explain explain.target=maybe", ["explain", "run={run}", "explain.target=maybe"], "explain.target",
         real_run()),
    Case("issue14 explain explain.patch=9 (digits are 8 x 8)", ["explain", "run={run}", "explain.patch=9"],
         "explain.patch", real_run()),
    Case("issue14 explain explain.patch=0", ["explain", "run={run}", "explain.patch=0"], "explain.patch", real_run()),
    Case("issue14 explain explain.baseline=blurr", ["explain", "run={run}", "explain.baseline=blurr"],
         "explain.baseline", real_run()),
    Case("issue14 explain explain.baseline=blur on a CSV run", ["explain", "run={run}", "explain.baseline=blur",
                                                              "explain.samples=4"],  # its test split has 9 rows
         "explain.baseline", CSV_RUN),
    Case("issue14 explain run= a folder that is not a run", ["explain", "run=notarun"], "notarun",
         files({"notarun/notes.txt": "not a run\n"})),
    Case("issue14 explain ckpt_path= random bytes", ["explain", "ckpt_path=random.ckpt"], "random.ckpt",
         files({"random.ckpt": RANDOM_BYTES})),
    Case("issue14 explain with no run", ["explain"], "run="),
]

# dlopt ensemble (issue 15): combining finished runs; most mistakes are told before any run is read.
CASES += [
    Case("issue15 ensemble with no runs", ["ensemble"], "runs="),
    Case("issue15 ensemble runs= a missing folder", ["ensemble", "runs=nowhere"], "runs=nowhere"),
    Case("issue15 ensemble runs= a folder without runs", ["ensemble", "runs=empty"], "runs=empty",
         files({"empty/notes.txt": "no runs here\n"})),
    Case("issue15 ensemble.select=greddy", ["ensemble", "runs=empty", "ensemble.select=greddy"], "ensemble.select",
         files({"empty/notes.txt": "no runs here\n"})),
    Case("issue15 ensemble.combine=avg", ["ensemble", "runs=empty", "ensemble.combine=avg"], "ensemble.combine",
         files({"empty/notes.txt": "no runs here\n"})),
    Case("issue15 ensemble.k=1", ["ensemble", "runs=empty", "ensemble.k=1"], "ensemble.k",
         files({"empty/notes.txt": "no runs here\n"})),
    Case("issue15 ensemble.rounds=0", ["ensemble", "runs=empty", "ensemble.rounds=0"], "ensemble.rounds",
         files({"empty/notes.txt": "no runs here\n"})),
    Case("issue15 ensemble of one finished run", ["ensemble", "runs=outputs/train"], "at least 2", real_run()),
    Case("issue15 ensemble method=bagg", ["ensemble", "method=bagg"], ("method=bagg", "did you mean bagging")),
    Case("issue15 ensemble method and runs", ["ensemble", "method=bagging", "runs=x"], ("method=bagging", "runs=x")),
    Case("issue15 ensemble.members=1", ["ensemble", "method=bagging", "ensemble.members=1"], "ensemble.members"),
    Case("issue15 ensemble.members one set", ["ensemble", "method=stacking", 'ensemble.members=["model=cnn"]'],
         "ensemble.members"),
    Case("issue15 ensemble.members unquoted", ["ensemble", "method=stacking", "ensemble.members=[model=cnn,model=mlp]"],
         ("ensemble.members", "quoted")),
    Case("issue15 ensemble member that does not compose",
         ["ensemble", "method=stacking", 'ensemble.members=["model=cnn","model=mlpp"]'],
         ("ensemble.members[1]", "did you mean mlp")),
    Case("issue15 ensemble.meta=logit", ["ensemble", "method=stacking", "ensemble.meta=logit"],
         ("ensemble.meta", "did you mean logistic")),
    Case("issue15 ensemble.folds=1", ["ensemble", "method=stacking", "ensemble.folds=1"], "ensemble.folds"),
    Case("issue15 ensemble.folds with bagging", ["ensemble", "method=bagging", "ensemble.folds=3"], "ensemble.folds"),
    Case("issue15 ensemble with a bad train override", ["ensemble", "method=bagging", "optimizer.lr=-1"],
         "optimizer.lr"),
    Case("issue15 ensemble with search=", ["ensemble", "method=bagging", "search=random"], "search="),
    Case("issue15 train data.fold=5/5", ["train", "data.fold=5/5"], "data.fold"),
    Case("issue15 train data.fold with data.bootstrap", ["train", "data.fold=0/5", "data.bootstrap=true"],
         ("data.fold", "data.bootstrap")),
    Case("issue15 train data.sample_weights= a missing file", ["train", "data.sample_weights=nothing.npy"],
         "data.sample_weights"),
    Case("issue15 train data.sample_weights= wrong length", ["train", "data.sample_weights=w.npy"],
         "data.sample_weights", lambda cwd: __import__("numpy").save(cwd / "w.npy", [1.0, 2.0, 3.0])),
    Case("issue15 eval run= an ensemble without ensemble.json", ["eval", "run=ens"], "ensemble.json",
         files({"ens/.hydra/config.yaml": "seed: 0\n", "ens/.hydra/hydra.yaml": "hydra:\n  job:\n    name: ensemble\n"})),
]

RUN_FILES = {"runs/0/.hydra/config.yaml": "seed: 0\noptimizer:\n  lr: 0.01\n",
             "runs/0/.hydra/overrides.yaml": "- seed=0\n",
             "runs/0/.hydra/hydra.yaml":
                 "hydra:\n  job:\n    name: train\n  runtime:\n    choices:\n      model: cnn\n",
             "runs/0/metrics.json": '{"objective": 0.1, "mode": "min", "test/acc": 0.9}'}
CASES += [
    Case("issue16 threads=0", ["train", "threads=0"], "threads=0"),
    Case("issue16 threads=many", ["train", "threads=many"], "threads=many"),
    Case("issue16 eval threads=-1", ["eval", "run={run}", "threads=-1"], "threads=-1", real_run()),
    Case("issue16 augmentation.hflip_p=0.5 on digits", ["train", "augmentation.hflip_p=0.5"],
         ("augmentation.hflip_p=0.5", "data.label_changing")),
    Case("issue17 runs of a folder without runs", ["runs", "path=empty"], "path=empty",
         files({"empty/notes.txt": "no runs here\n"})),
    Case("issue17 runs of a missing folder", ["runs", "path=nowhere"], "path=nowhere"),
    Case("issue17 runs where= an unknown key", ["runs", "path=runs", "where=modle=cnn"],
         ("modle", "did you mean model"), files(RUN_FILES)),
    Case("issue17 runs where= no KEY=VALUE", ["runs", "path=runs", "where=cnn"], "where=cnn", files(RUN_FILES)),
    Case("issue17 runs by= an unknown key", ["runs", "path=runs", "by=optimiser"], ("optimiser", "did you mean"),
         files(RUN_FILES)),
    Case("issue17 runs sort= not a metric", ["runs", "path=runs", "sort=test/accc"], ("sort=test/accc", "test/acc"),
         files(RUN_FILES)),
    Case("issue17 runs format=xml", ["runs", "path=runs", "format=xml"], "format=xml", files(RUN_FILES)),
    Case("issue17 runs limit=0", ["runs", "path=runs", "limit=0"], "limit=0", files(RUN_FILES)),
    Case("issue17 runs compare= one run", ["runs", "compare=[runs/0]"], "at least two", files(RUN_FILES)),
    Case("issue17 runs compare= a folder that is not a run", ["runs", "compare=[runs/0,empty]"], "empty",
         files({**RUN_FILES, "empty/notes.txt": "no runs here\n"})),
    Case("issue17 runs metric= not a metric", ["runs", "path=runs", "by=seed", "metric=acc"], "metric=acc",
         files(RUN_FILES)),
]



def header_only(run: Path) -> None:
    """diagnostics.jsonl as an older dlopt left it after resuming the run: its header line only."""
    path = run / "diagnostics.jsonl"
    path.write_text(path.read_text().splitlines()[0].replace(', "from_epoch": 1', "") + "\n")


CASES += [
    Case("issue24 resume= a finished run with optimizer=sgd", ["train", "resume={run}", "optimizer=sgd"],
         ("resume=", "has already finished"), real_run(), tiny=False),
    Case("issue24 resume= a finished run with trainer.max_epochs=1", ["train", "resume={run}", "trainer.max_epochs=1"],
         ("resume=", "has already finished"), real_run(), tiny=False),
    Case("issue24 resume= a killed run with optimizer=sgd", ["train", "resume={run}", "optimizer=sgd"],
         ("resume=", "would change what the run trained", "resume_changes=true"), real_run(killed(lambda r: None)),
         tiny=False),
    Case("issue24 resume= a killed run with model=mlp", ["train", "resume={run}", "model=mlp"],
         ("resume=", "would change what the run trained", "model._target_"), real_run(killed(lambda r: None)),
         tiny=False),
    Case("issue24 resume= a killed run with data=mnist1d", ["train", "resume={run}", "data=mnist1d"],
         ("resume=", "would change what the run trained", "data._target_"), real_run(killed(lambda r: None)),
         tiny=False),
    Case("issue24 resume= a run whose diagnostics.jsonl lost its first epochs", ["train", "resume={run}"],
         ("resume=", "diagnostics.jsonl", "diagnostics=none"), real_run(killed(header_only)), tiny=False),
    Case("issue24 resume= a run with a damaged resumes.json", ["train", "resume={run}"], ("resume=", "resumes.json"),
         real_run(killed(lambda run: (run / "resumes.json").write_text("[{]"))), tiny=False),
    Case("issue24 resume_changes=yes", ["train", "resume={run}", "resume_changes=yes"], "resume_changes=yes",
         real_run(killed(lambda r: None)), tiny=False),
]

def uneven_table(name: str = "t.csv", counts: tuple[int, ...] = (30, 30, 3)) -> Setup:
    """A CSV like table()'s with counts[i] rows of class "abc"[i]: a class too small for some number of folds."""
    rng = random.Random(0)
    lines = ["height,weight,species"]
    for label, count in zip("abc", counts):
        lines += [f"{rng.uniform(1, 2):.3f},{rng.uniform(40, 90):.1f},{label}" for _ in range(count)]
    return files({name: "\n".join(lines) + "\n"})


# Cross-validation (data.cv), optimizer=lbfgs and data.min_batches (issue 25): each refused before training.
CSV = ["data=csv", "data.path=t.csv", "data.target=species"]
CASES += [
    Case("issue25 data.cv=1", ["train", "data.cv=1"], "data.cv"),
    Case("issue25 data.cv=abc", ["train", "data.cv=abc"], "data.cv"),
    Case("issue25 data.cv=5 on a CSV whose smallest class has 3 rows", ["train", *CSV, "data.cv=5"], "data.cv",
         uneven_table()),
    Case("issue25 data.cv=5 with data.fold=0/5", ["train", "data.cv=5", "data.fold=0/5"], ("data.cv", "data.fold")),
    Case("issue25 data.cv=5 with data.bootstrap=true", ["train", "data.cv=5", "data.bootstrap=true"],
         ("data.cv", "data.bootstrap")),
    Case("issue25 optimizer=lbfgs with trainer.accumulate_grad_batches=2",
         ["train", "optimizer=lbfgs", "trainer.accumulate_grad_batches=2"],
         ("optimizer=lbfgs", "trainer.accumulate_grad_batches")),
    Case("issue25 optimizer=lbfgs with augmentation=mixup on a CSV", ["train", *CSV, "optimizer=lbfgs",
                                                                      "augmentation=mixup"],
         ("optimizer=lbfgs", "augmentation.mixup_alpha"), table()),
    Case("issue25 data.min_batches=0", ["train", "data.min_batches=0"], "data.min_batches"),
    Case("issue25 tune-lr optimizer=lbfgs", ["tune-lr", "optimizer=lbfgs"], "optimizer=lbfgs"),
    Case("issue25 tune-lr data.cv=5", ["tune-lr", "data.cv=5"], "data.cv"),
    Case("issue25 ensemble method=bagging data.cv=5", ["ensemble", "method=bagging", "data.cv=5"], "data.cv"),
    Case("issue25 data=mnist1d data.cv=5 (mnist1d has no cv key)", ["train", "data=mnist1d", "data.cv=5"], "data.cv"),
    Case("issue26 search.storage=journal: in a missing folder", ["train", "search=random",
         "search.storage=journal:no/such/folder/s.log"], "search.storage=journal:"),
    Case("issue26 search.heartbeat on a journal file", ["train", "search=random", "search.storage=journal:s.log",
         "search.heartbeat=5"], "search.heartbeat=5"),
    Case("issue26 search.heartbeat=0", ["train", "search=random", "search.heartbeat=0"], "search.heartbeat=0"),
    Case("issue26 hydra/launcher=ray with no cluster at the address", ["train", "-m", "optimizer=sgd,adam",
         "hydra/launcher=ray", "hydra.launcher.address=127.0.0.1:9"], "hydra.launcher.address=127.0.0.1:9"),
    Case("issue26 trainer.num_nodes=2 with nothing that defines the machines", ["train", "trainer.num_nodes=2"],
         "trainer.num_nodes=2"),
    Case("issue26 trainer.num_nodes=2 inside a sweep", ["train", "-m", "trainer.num_nodes=2", "optimizer=sgd,adam"],
         "trainer.num_nodes=2"),
    Case("issue26 trainer=nodes without torchrun or a shared run folder", ["train", "trainer=nodes"], "trainer=nodes"),
]

# --- the runner ------------------------------------------------------------------------------------

@dataclass
class Outcome:
    case: Case
    status: str  # one-line, traceback, unclear, accepted, timeout, setup-failed
    seconds: float
    argv: list[str]
    message: str
    debris: list[str]


_RUNNING: set = set()  # the process groups started here, killed on Ctrl-C
_LOG_PREFIX = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\]\[[\w.]+\]\[\w+\] - ")
_LOG_PREFIX_ANYWHERE = re.compile(_LOG_PREFIX.pattern[1:])
# lines that only echo the command line, so they always hold the needle: Hydra's "Error executing job
# with overrides: [...]" and its sweep log ("[HYDRA] #0 : ..."), and INFO / DEBUG log lines
_ECHO = re.compile(r"^Error executing job with overrides|^\[[\d\- :,]+\]\[HYDRA\]|^\[[\d\- :,]+\]\[[\w.]+\]\[(INFO|DEBUG)\]")

_EXCEPTION = re.compile(r"^[\w.]*(Error|Exception|Exit|Interrupt)\b")  # "ValueError: ..." ending a traceback


def output_lines(output: str) -> list[str]:
    """The output's lines without Lightning's progress bars: a log line written after a bar's
    carriage return (no newline) starts where the bar ends."""
    lines = []
    for line in output.splitlines():
        log = list(_LOG_PREFIX_ANYWHERE.finditer(line))
        lines.append(line[log[-1].start():] if log else line.rsplit("\r", 1)[-1])
    return lines


def naming(output: str, needles: tuple[str, ...]) -> Optional[str]:
    """The first line that names every needle (not counting lines that echo the command line)."""
    lines = (line for line in output_lines(output) if not _ECHO.match(line))
    return next((line for line in lines if all(n in line for n in needles)), None)


def command(case: Case, values: dict) -> list[str]:
    """The case's arguments with {name} values filled in and, for train / tune-lr, TINY first."""
    args = list(case.args)
    for name, value in values.items():
        args = [a.replace("{" + name + "}", value) for a in args]
    if case.tiny and args[0] in ("train", "tune-lr"):
        own = {a.split("=", 1)[0].lstrip("+~") for a in args[1:] if "=" in a and not a.startswith("-")}
        args = [args[0], *(t for t in TINY if t.split("=", 1)[0] not in own), *args[1:]]
    return args


def snapshot(cwd: Path) -> set[str]:
    """Every file and folder under cwd, as paths relative to it."""
    paths = set()
    for root, dirs, names in os.walk(cwd):
        for name in dirs + names:
            paths.add(os.path.relpath(os.path.join(root, name), cwd))
    return paths


def classify(code: Optional[int], output: str, case: Case) -> str:
    needles = case.needles
    if code is None:
        return "timeout"
    if "Traceback" in output or code == 1 or code < 0:
        return "traceback"
    if code == 0:
        return "one-line" if case.told_at_exit_0 and naming(output, needles) is not None else "accepted"
    if code == 2 and naming(output, needles) is not None:
        return "one-line"
    return "unclear"


def message(output: str, needles: tuple[str, ...], code: Optional[int], status: str) -> str:
    """The first line naming the needles, else (and for a traceback: its exception) the last line."""
    lines = [_LOG_PREFIX.sub("", line).strip() for line in output_lines(output)]
    lines = [line for line in lines if line]
    hit = naming(output, needles) if status != "traceback" else None
    error = next((line for line in reversed(lines) if _EXCEPTION.match(line)), None)
    text = _LOG_PREFIX.sub("", hit).strip() if hit else error or (lines[-1] if lines else "(no output)")
    if code is None:
        text = f"(killed after the timeout) {text}"
    elif code not in (0, 1, 2):
        text = f"(exit {code}) {text}"
    return text


def kill(proc: subprocess.Popen) -> None:
    """The process group this script started for one case (dlopt and its DDP ranks or joblib workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # it has just ended
        pass


def run_case(case: Case, exe: str, timeout: float, keep: bool) -> Outcome:
    cwd = Path(tempfile.mkdtemp(prefix="dlopt-bad-"))
    start = time.perf_counter()
    try:
        try:
            values = (case.setup(cwd) if case.setup else None) or {}
        except Exception as err:
            return Outcome(case, "setup-failed", time.perf_counter() - start, case.args,
                           f"{type(err).__name__}: {err}".splitlines()[0], [])
        argv = command(case, values)
        before = snapshot(cwd)
        start = time.perf_counter()
        proc = subprocess.Popen([exe, *argv], cwd=cwd, env=environment(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        _RUNNING.add(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            kill(proc)
            out, err = proc.communicate()
            code = None
        finally:
            _RUNNING.discard(proc)
        seconds = time.perf_counter() - start
        output = out.decode("utf-8", "replace") + err.decode("utf-8", "replace")
        new = sorted(snapshot(cwd) - before)
        debris = [p for p in new if Path(p).name == PWNED]
        if code not in (0, None) and not case.debris_ok:
            debris += [p for p in new if Path(p).parts[0] == "outputs"]
        status = classify(code, output, case)
        return Outcome(case, status, seconds, argv, message(output, case.needles, code, status), shortlist(debris, cwd))
    finally:
        if keep:
            print(f"  kept {cwd}", flush=True)
        else:
            shutil.rmtree(cwd, ignore_errors=True)


def shortlist(paths: list[str], cwd: Path) -> list[str]:
    """Debris, the telling paths first: PWNED, then files outside .hydra, then the rest."""
    def rank(path: str) -> tuple:
        return (Path(path).name != PWNED, ".hydra" in Path(path).parts or (cwd / path).is_dir(), path)
    return sorted(paths, key=rank)


def shown(argv: list[str]) -> str:
    return " ".join(a if len(a) <= 60 else a[:40] + f"...({len(a)} chars)" for a in argv)


def line(outcome: Outcome) -> str:
    status = outcome.status + ("+debris" if outcome.debris else "")
    text = f"{status:<18} {outcome.seconds:6.1f}s  {outcome.case.name}\n{'':27}$ dlopt {shown(outcome.argv)}\n" \
           f"{'':27}> {outcome.message[:300]}"
    if outcome.debris:
        text += f"\n{'':27}left {len(outcome.debris)} new paths: {', '.join(outcome.debris[:3])}"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--only", default=None, help="run the cases whose name or arguments contain this")
    parser.add_argument("--list", action="store_true", help="list the cases without running them")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per case (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep each case's folder (printed) for a look")
    options = parser.parse_args()

    names = [c.name for c in CASES]
    assert len(set(names)) == len(names), [n for n in names if names.count(n) > 1]
    cases = [c for c in CASES if options.only is None or options.only in f"{c.name} {' '.join(c.args)}"]
    if options.list:
        for case in cases:
            print(f"{case.name:<70} dlopt {shown(case.args)}   [needs: {' & '.join(case.needles)}]")
        print(f"{len(cases)} cases")
        return 0

    exe = dlopt_exe()
    print(f"{len(cases)} cases, {options.jobs} at a time, with {exe}", flush=True)
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=max(1, options.jobs))
    try:
        futures = [pool.submit(run_case, c, exe, options.timeout, options.keep) for c in cases]
        for future in as_completed(futures):
            outcomes.append(future.result())
            print(line(outcomes[-1]), flush=True)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in list(_RUNNING):  # the cases running now
            kill(proc)
        print("interrupted: the tally covers the cases that finished", flush=True)
    pool.shutdown()

    order = {c.name: i for i, c in enumerate(CASES)}
    outcomes.sort(key=lambda o: order[o.case.name])
    count = {s: sum(o.status == s for o in outcomes)
             for s in ("one-line", "traceback", "unclear", "accepted", "timeout", "setup-failed")}
    debris = [o for o in outcomes if o.debris]
    print(f"\n=== to do ({time.perf_counter() - started:.0f} s)")
    for status in ("traceback", "unclear", "accepted", "timeout", "setup-failed"):
        for o in (o for o in outcomes if o.status == status):
            print(f"{status:<13} {o.case.name}: {o.message[:200]}")
    for o in debris:
        print(f"{'debris':<13} {o.case.name}: {len(o.debris)} new paths: {', '.join(o.debris[:2])}")
    print(f"\ntried {len(outcomes)}: one-line errors {count['one-line']}, tracebacks {count['traceback']}, "
          f"unclear {count['unclear']}, accepted {count['accepted']}, timeouts {count['timeout']}, "
          f"setup failed {count['setup-failed']}; debris {len(debris)}")
    return 0


if __name__ == "__main__":
    main()
    sys.exit(0)
