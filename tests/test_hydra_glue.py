"""dlopt/hydra_glue.py and the run folders of dlopt/folders.py: each rewrite of a command line into Hydra's arguments
(one row each), the resolvers an entry point registers (no import does), and folders that resolving a config names
but never creates: the run claims its own when it starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dlopt import folders, hydra_glue
from dlopt.apps import config_dir
from dlopt.errors import UserError
from dlopt.hydra_glue import hydra_args

# (the arguments after the command, what Hydra gets)
REWRITES = [
    ([], []),
    (["model=resnet", "optimizer.lr=0.1", "+x=1", "~y"], ["model=resnet", "optimizer.lr=0.1", "+x=1", "~y"]),
    # Hydra's flags (and their values) before the overrides
    (["model=mlp", "--cfg", "job"], ["--cfg", "job", "model=mlp"]),
    (["x=1", "--config-dir", "./c", "experiment=e"], ["--config-dir", "./c", "x=1", "experiment=e"]),
    (["a=1", "-m", "b=1,2"], ["-m", "a=1", "b=1,2"]),
    (["a=1", "--cfg", "hydra", "--resolve"], ["--cfg", "hydra", "--resolve", "a=1"]),
    (["a=1", "--info", "config"], ["--info", "config", "a=1"]),
    (["--info", "b=2", "a=1"], ["--info", "b=2", "a=1"]),  # --info's value is optional: an override is not it
    # an additive group's comma list is both options in one run; with -m it stays a sweep
    (["callbacks=default,ema"], ["callbacks=[default,ema]"]),
    (["callbacks=[default,ema]"], ["callbacks=[default,ema]"]),
    (["-m", "callbacks=default,ema"], ["-m", "callbacks=default,ema"]),
    (["optimizer=sgd,adam"], ["optimizer=sgd,adam"]),  # not additive: Hydra says a list needs -m
    # a condition reaches the command as one string
    (["where=model=cnn"], ['where="model=cnn"']),
    (["where='model=cnn'"], ["where='model=cnn'"]),
    (['where="model=cnn"'], ['where="model=cnn"']),
    (["where=cnn"], ["where=cnn"]),
    (["where=[model=cnn]"], ["where=[model=cnn]"]),
    # every rewrite at once
    (["where=a=b", "callbacks=default,swa", "-cd", "d"], ["-cd", "d", 'where="a=b"', "callbacks=[default,swa]"]),
]
MULTI = "(--cfg job prints the config of a single run: drop -m to see it)"
REFUSALS = [
    (["-m", "--cfg", "job"], f"--multirun and --cfg cannot be combined; give one of them {MULTI}"),
    (["model=mlp", "-m", "--cfg", "job"], f"--multirun and --cfg cannot be combined; give one of them {MULTI}"),
    (["--cfg", "job", "-i"], "--cfg and --info cannot be combined; give one of them"),
    (["-r", "--multirun"], "--run and --multirun cannot be combined; give one of them"),
    (["=3"], "=3 has no key: give group=option or group.key=value"),
    (["+=3"], "+=3 has no key: give group=option or group.key=value"),
    (["k" * 256 + "=1"], f"{'k' * 40}... (256 characters) is not a key of the config: keys and group names are at "
                         "most 255 characters; give group=option or group.key=value"),
]


@pytest.mark.parametrize("args, hydra", REWRITES, ids=lambda v: " ".join(v) or "(none)")
def test_each_rewrite(args, hydra):
    assert hydra_args("train", args) == hydra
    assert hydra_args("train", hydra) == hydra  # a rewritten command line (DDP's relaunch of it) stays as it is


@pytest.mark.parametrize("args, message", REFUSALS, ids=lambda v: " ".join(v)[:40] if isinstance(v, list) else "")
def test_each_refusal(args, message):
    with pytest.raises(UserError) as refused:
        hydra_args("train", args)
    assert str(refused.value) == message


WITHOUT_DASHES = "an override is written without dashes"
# natural slips: (command, the arguments after it, the line); each names the override that was probably meant
SLIPS = [
    ("train", ["--optimizer=sgd"], f"--optimizer=sgd is not a flag of dlopt train; {WITHOUT_DASHES}: optimizer=sgd "
                                   "(dlopt train --help lists the groups and keys)"),
    ("train", ["--epochs", "3"], f"--epochs 3 is not a flag of dlopt train; {WITHOUT_DASHES}: epochs=3 (dlopt train "
                                 "--help lists the groups and keys)"),
    ("tune-lr", ["-x"], f"-x is not a flag of dlopt tune-lr; {WITHOUT_DASHES}: x=VALUE (dlopt tune-lr --help lists the "
                        "groups and keys)"),
    ("train", ["resnet"], "resnet is not an override (KEY=VALUE); did you mean model=resnet?"),
    ("train", ["adam"], "adam is not an override (KEY=VALUE); did you mean optimizer=adam?"),
    ("train", ["fast"], "fast is not an override (KEY=VALUE); write KEY=VALUE (dlopt train --help lists the groups and "
                        "keys)"),
    ("eval", ["outputs/train/2026-12-05/10-00-00"], "outputs/train/2026-12-05/10-00-00 is not an override (KEY=VALUE); "
                                                    "did you mean run=outputs/train/2026-12-05/10-00-00?"),
    ("doctor", ["outputs/train/x"], "outputs/train/x is not an override (KEY=VALUE); did you mean run=outputs/train/x?"),
    ("ensemble", ["outputs/train/multirun/x"], "outputs/train/multirun/x is not an override (KEY=VALUE); did you mean "
                                               "runs=outputs/train/multirun/x?"),
    ("runs", ["outputs/train"], "outputs/train is not an override (KEY=VALUE); did you mean path=outputs/train?"),
]


@pytest.mark.parametrize("command, args, message", SLIPS, ids=lambda v: " ".join(v)[:40] if isinstance(v, list) else v)
def test_each_slip_names_the_override_it_meant(command, args, message):
    with pytest.raises(UserError) as refused:
        hydra_args(command, args)
    assert str(refused.value) == message


def test_a_resume_runs_in_its_run_folder_and_keeps_its_record(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert hydra_args("train", [f"resume={run}", "trainer.max_epochs=9", "--cfg", "job"]) == [
        "--cfg", "job", f"resume={run}", "trainer.max_epochs=9", f"hydra.run.dir={run.resolve()}",
        "hydra.output_subdir=null"]
    for args in ([], ["resume=null"], ["resume="]):
        assert hydra_args("train", args) == args
    assert hydra_args("eval", [f"resume={run}"]) == [f"resume={run}"]  # train's key only
    for args, message in (([f"resume={run}", "-m"], f"resume={run} continues one run and cannot be combined with -m"),
                          ([f"resume={tmp_path / 'none'}"], f"resume={tmp_path / 'none'} does not exist")):
        with pytest.raises(UserError, match=message):
            hydra_args("train", args)


def test_no_import_registers_a_resolver():
    code = ("import importlib, pkgutil, dlopt\n"
            "from omegaconf import OmegaConf\n"
            "for m in pkgutil.walk_packages(dlopt.__path__, 'dlopt.'):\n"
            "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
            "from dlopt.hydra_glue import RESOLVERS\n"
            "print([name for name in RESOLVERS if OmegaConf.has_resolver(name)])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


def test_register_resolvers_registers_each_once():
    from dlopt.saved_run import RESOLVERS as FROM_FILES

    hydra_glue.register_resolvers()
    hydra_glue.register_resolvers()
    assert all(OmegaConf.has_resolver(name) for name in hydra_glue.RESOLVERS)
    assert set(hydra_glue.RESOLVERS) == set(hydra_glue._resolvers())
    assert set(hydra_glue.RESOLVERS).isdisjoint(FROM_FILES)  # a config read back from a file calls none of them


def test_override_strings_name_registered_resolvers():
    hydra_glue.register_resolvers()
    config = OmegaConf.create({"seed": 7, "data": {"fold": "2/5"}, "member": hydra_glue.member_subdir(4).strip("'"),
                               "fold": hydra_glue.fold_subdir().strip("'")})
    assert (config.member, config.fold) == ("3", "2")


@pytest.fixture
def no_claims(monkeypatch, tmp_path):
    """This test's own folders.py state, in tmp_path."""
    for name, value in (("_created", []), ("_named", {}), ("_claimed", {}), ("_refused", {})):
        monkeypatch.setattr(folders, name, value)
    monkeypatch.chdir(tmp_path)
    hydra_glue.register_resolvers()


def composed(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), job_name="train", version_base=None):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_resolving_the_run_and_sweep_folders_creates_nothing(no_claims, tmp_path):
    config = composed()
    run, sweep = OmegaConf.select(config, "hydra.run.dir"), OmegaConf.select(config, "hydra.sweep.dir")
    assert run.startswith("outputs/train/") and sweep.startswith("outputs/train/multirun/")
    OmegaConf.resolve(config)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "outputs" / "same").mkdir(parents=True)  # another command's
    assert OmegaConf.select(composed("hydra.run.dir=${dlopt.fresh:outputs/same}"), "hydra.run.dir") == \
        "outputs/same_1"
    assert not (tmp_path / "outputs" / "same_1").exists()


def test_the_run_claims_its_folder_when_it_starts(no_claims, tmp_path):
    """Two runs asking for one folder at once get one each (FreshFolders, Hydra's on_run_start), and each config
    then resolves to its own, also in the copies Hydra makes of it (its resolver cache)."""
    ask = "hydra.run.dir=${dlopt.fresh:outputs/same}"
    first, second = composed(ask), composed(ask)
    assert OmegaConf.select(first, "hydra.run.dir") == OmegaConf.select(second, "hydra.run.dir") == "outputs/same"
    for config in (first, second):
        folders.FreshFolders().on_run_start(config=config)
    assert [OmegaConf.select(c, "hydra.run.dir") for c in (first, second)] == ["outputs/same", "outputs/same_1"]
    copy = composed(ask)
    OmegaConf.copy_cache(second, copy)
    assert OmegaConf.select(copy, "hydra.run.dir") == "outputs/same_1"
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["same", "same_1"]
    folders.FreshFolders().on_run_start(config=composed("hydra.run.dir=mine"))  # a folder the user named: Hydra's
    assert not (tmp_path / "mine").exists()


def test_a_folder_that_cannot_be_claimed_is_refused_when_hydra_resolves_it(no_claims, tmp_path):
    (tmp_path / "outputs").write_text("not a folder\n")
    config = composed("hydra.sweep.dir=${dlopt.fresh:outputs/sweep}")
    folders.FreshFolders().on_multirun_start(config=config)  # Hydra would turn an exception here into a warning
    with pytest.raises(Exception) as refused:
        OmegaConf.select(config, "hydra.sweep.dir")
    assert "outputs is a file where dlopt needs a folder" in str(refused.value)


def test_cfg_resolve_leaves_nothing(cli, tmp_path):
    result = cli.ok("train", "--cfg", "hydra", "--resolve", cwd=tmp_path, timeout=60)
    assert "dir: outputs/train/" in result.stdout
    assert list(tmp_path.iterdir()) == []
