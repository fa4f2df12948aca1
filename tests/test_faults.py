"""End to end: what a user does wrong, or what happens to them, never corrupts a result or shows a
traceback (issue 12). Each test drives the real `dlopt` command:

- commands started at once get folders of their own, for runs, sweeps and searches;
- a search continued after it stopped draws new points, with every sampler;
- a checkpoint or run folder from elsewhere builds only allowlisted targets and runs no resolver of its choosing;
- mistakes and a hostile file system (no permission, read-only, a file in the way, a full disk) are one
  line naming the key or path, exit 2, and leave nothing behind (a full disk keeps the last good checkpoint);
- checks that need no torch answer before torch is imported;
- a resumed run's wall time counts every process.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
import torch
from faults import Payload
from test_bad_inputs import assert_fails_clearly

from dlopt import folders
from dlopt.errors import UserError
from dlopt.saved_run import check_config
from omegaconf import OmegaConf

TESTS = Path(__file__).parent
FAULTS = ("--config-dir", str(TESTS / "conf"))  # callbacks/kill.yaml: faults.KillAt
SMALL = ("model=mlp", "model.width=16")


def faults_env(**extra: str) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p), **extra}


def one_line(result, *needles: str) -> str:
    """Exit 2, no traceback, and exactly one line holding every needle (which this returns)."""
    assert result.returncode == 2 and "Traceback" not in result.output, result.describe()
    lines = [line for line in result.output.splitlines() if all(n in line for n in needles)]
    assert len(lines) == 1, f"expected one line with {needles}:\n{result.describe()}"
    return lines[0]


def nothing_left(cwd: Path) -> None:
    """Not even an empty outputs/ folder."""
    assert not (cwd / "outputs").exists(), sorted(str(p) for p in (cwd / "outputs").rglob("*"))


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def finished_run(cli, tmp_path_factory) -> Path:
    return cli.train(*SMALL, cwd=tmp_path_factory.mktemp("finished"))


def copy_run(run_dir: Path, into: Path) -> Path:
    target = into / "their_run"
    shutil.copytree(run_dir, target)
    return target


# --- 1. every command's folder is its own --------------------------------------------------------------


def test_claim_takes_the_first_free_name_and_discard_removes_only_what_it_made(tmp_path, monkeypatch):
    monkeypatch.setattr(folders, "_created", [])
    taken = tmp_path / "outputs" / "day" / "10-00-00"
    taken.mkdir(parents=True)
    (taken / "metrics.json").write_text("{}")
    first = Path(folders.claim(str(taken)))
    second = Path(folders.claim(str(taken)))
    assert (first.name, second.name) == ("10-00-00_1", "10-00-00_2")
    (second / ".hydra").mkdir()
    (second / "train.log").write_text("a failed run's log\n")
    folders.discard()
    assert not first.exists() and not second.exists()  # empty, or only Hydra's files: this process's own
    assert (taken / "metrics.json").is_file()  # another command's run is never touched


def test_runs_started_at_once_get_folders_of_their_own(cli, tmp_path):
    # three runs, two configs, asking for the same folder at the same moment
    ask = "hydra.run.dir=${dlopt.fresh:outputs/same}"
    models = ("mlp", "cnn", "mlp")
    procs = [subprocess.Popen([cli.exe, "train", *cli.TINY, f"model={m}", "model.width=16", ask], cwd=tmp_path,
                              env=cli.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for m in models]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    runs = sorted((tmp_path / "outputs").iterdir())
    assert [r.name for r in runs] == ["same", "same_1", "same_2"]
    for run in runs:  # each folder holds one run: its config, its network, its metrics, its log
        target = cli.config(run)["model"]["_target_"]
        saved = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["dlopt"]["config"]
        assert saved["model"]["_target_"] == target
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
        log = (run / "train.log").read_text()
        [params] = re.findall(r"model: ([\d,]+) parameters", log)  # one run logged here, and it wrote the metrics
        assert cli.metrics(run)["params"] == int(params.replace(",", "")) and f"-> {run}" in log
    assert sorted(cli.config(r)["model"]["_target_"].rsplit(".", 1)[1] for r in runs) == ["CNN", "MLP", "MLP"]


def taken_stamps(root: Path, fmt: str, seconds: int = 300) -> list[Path]:
    """Folders for every second of the next `seconds`, as if other commands had just started each."""
    now = datetime.now()
    made = [root / (now + timedelta(seconds=s)).strftime(fmt) for s in range(-1, seconds)]
    for folder in made:
        folder.mkdir(parents=True, exist_ok=True)
    return made


def test_a_run_whose_time_stamp_is_taken_gets_a_suffix(cli, tmp_path):
    taken = taken_stamps(tmp_path / "outputs" / "train", "%Y-%m-%d/%H-%M-%S")
    run = cli.run("train", *cli.TINY, *SMALL, cwd=tmp_path)
    assert run.returncode == 0, run.describe()
    [done] = [p.parent for p in (tmp_path / "outputs" / "train").rglob("metrics.json")]
    assert done.name.endswith("_1") and done.with_name(done.name[:-2]) in taken
    assert not any(files_under(folder) for folder in taken)


@pytest.mark.slow
def test_a_sweep_and_a_search_whose_time_stamp_is_taken_get_a_suffix(cli, tmp_path):
    taken = taken_stamps(tmp_path / "outputs" / "train" / "multirun", "%Y-%m-%d/%H-%M-%S")
    cli.ok("train", "-m", *cli.TINY, *SMALL, "optimizer.lr=0.01,0.02", cwd=tmp_path)
    [summary] = (tmp_path / "outputs" / "train" / "multirun").rglob("summary.md")
    assert summary.parent.name.endswith("_1") and (summary.parent / "1" / "metrics.json").is_file()
    assert not any(files_under(folder) for folder in taken)

    taken = taken_stamps(tmp_path / "outputs" / "train" / "search", "%Y-%m-%d_%H-%M-%S")
    cli.ok("train", "search=random", "search.n_trials=2", "search.params=null", "optimizer.lr=interval(0.001,0.1)",
           *cli.TINY, *SMALL, cwd=tmp_path)
    [study_db] = (tmp_path / "outputs" / "train" / "search").rglob("study.db")
    sweep = study_db.parent
    assert sweep.name.endswith("_1") and not any(files_under(folder) for folder in taken)
    assert cli.config(sweep / "1")["search"]["study_name"] == sweep.name  # the trials report to this study
    assert optuna.load_study(study_name=sweep.name, storage=f"sqlite:///{study_db}").trials[1].state.is_finished()
    shared = (sweep / "summary.md").read_text().splitlines()[0]
    assert shared.startswith("All runs: `search=random") and f"search.study_name={sweep.name}" in shared


# --- 2. a continued search draws new points ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["grid", "random", "tpe", "gp", "cmaes", "nsga2"])
def test_a_continued_search_never_repeats_a_finished_trial(cli, tmp_path, sampler):
    if sampler == "grid":
        space = ("search=grid", "search.params=null", "optimizer.lr=0.001,0.003,0.01", "model.depth=1,2")
    else:
        space = ("search=random", f"search.sampler={sampler}", "search.params=null",
                 "optimizer.lr=tag(log,interval(1e-4,1e-1))", "regularization.weight_decay=interval(0,0.01)")
    common = (*space, "search.study_name=s", "search.startup_trials=2", "search.population=2", *cli.TINY, *SMALL)
    cli.ok("train", *common, "search.n_trials=3", cwd=tmp_path)
    again = cli.ok("train", *common, "search.n_trials=6", cwd=tmp_path)
    assert "continuing, 3 of 6 trials done" in again.output
    sweep = tmp_path / "outputs" / "train" / "search" / "s"
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{sweep / 'study.db'}").trials
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(params) == 6 and len(set(params)) == 6, params


# --- 3. files from elsewhere are data --------------------------------------------------------------------


def rewritten_checkpoint(source: Path, path: Path, change) -> Path:
    checkpoint = torch.load(source, weights_only=True)
    change(checkpoint["dlopt"]["config"])
    torch.save(checkpoint, path)
    torch.load(path, weights_only=True)  # a file that passes weights_only loading
    return path


def test_a_checkpoint_whose_config_names_another_target_builds_nothing(in_process, finished_run, tmp_path):
    marker = tmp_path / "written.txt"

    def evil(config):
        config["data"] = {"_target_": "pathlib.Path.write_text", "_args_": [str(marker), "pwned"]}

    ckpt = rewritten_checkpoint(finished_run / "checkpoints" / "best.ckpt", tmp_path / "colleague.ckpt", evil)
    result = in_process.run("eval", f"ckpt_path={ckpt}", cwd=tmp_path)
    line = assert_fails_clearly(result, tmp_path, "data._target_=pathlib.Path.write_text",
                                "is not a target dlopt builds from a file")
    assert "colleague.ckpt" in line and result.returncode == 2
    assert not marker.exists()
    nothing_left(tmp_path)


def test_a_checkpoint_whose_config_calls_another_resolver_calls_nothing(in_process, finished_run, tmp_path):
    planted = tmp_path / "planted"

    def evil(config):
        config["data"]["name"] = "${dlopt.fresh:" + str(planted) + "}"

    ckpt = rewritten_checkpoint(finished_run / "checkpoints" / "best.ckpt", tmp_path / "colleague.ckpt", evil)
    result = in_process.run("eval", f"ckpt_path={ckpt}", cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, "data.name=${dlopt.fresh:", "calls the resolver dlopt.fresh")
    assert not planted.exists()


def test_a_checkpoint_whose_config_is_not_a_runs_is_named(in_process, finished_run, tmp_path):
    ckpt = rewritten_checkpoint(finished_run / "checkpoints" / "best.ckpt", tmp_path / "other.ckpt", dict.clear)
    result = in_process.run("eval", f"ckpt_path={ckpt}", cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, "other.ckpt", "it lacks seed, monitor, data, model")
    nothing_left(tmp_path)


def test_a_run_folder_whose_config_names_another_target_is_not_resumed(in_process, finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    (run_dir / "metrics.json").unlink()
    config = run_dir / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("_target_: dlopt.data.sources.digits", "_target_: os.popen", 1))
    results = [p for p in files_under(run_dir) if p.name != "train.log"]  # the log says why, below the run's
    before = {p: p.read_bytes() for p in results}
    result = in_process.run("train", f"resume={run_dir}", "trainer.max_epochs=2", cwd=tmp_path)
    one_line(result, f"resume={run_dir}", "data._target_=os.popen", "is not a target dlopt builds from a file")
    assert {p: p.read_bytes() for p in results} == before  # nothing rewritten, the changed config neither


def test_a_config_folder_given_on_the_command_line_is_trusted(cli, tmp_path):
    # the run's own config names faults.KillAt; resuming it builds that target only with a config folder naming it
    kill = ("+callbacks.kill._target_=faults.KillAt", "+callbacks.kill.epoch=9", "+callbacks.kill.batch=0")
    started = cli.run("train", *cli.TINY, *SMALL, *kill, cwd=tmp_path, env=faults_env())
    assert started.returncode == 0, started.describe()
    [run_dir] = cli.run_dirs(tmp_path)
    (run_dir / "metrics.json").unlink()
    refused = cli.run("train", f"resume={run_dir}", cwd=tmp_path, env=faults_env())
    line = one_line(refused, "callbacks.kill._target_=faults.KillAt", "is not a target dlopt builds from a file")
    assert "--config-dir" in line
    resumed = cli.run("train", *FAULTS, f"resume={run_dir}", cwd=tmp_path, env=faults_env())
    assert resumed.returncode == 0, resumed.describe()
    assert cli.metrics(run_dir)["epochs"] == 1


@pytest.mark.parametrize("target, allowed", [
    ("torch.optim.NAdam", True),  # a library class dlopt's conf does not name
    ("torch.optim.lr_scheduler.OneCycleLR", True),
    ("lightning.pytorch.callbacks.StochasticWeightAveraging", True),
    ("lightning.pytorch.loggers.CSVLogger", True),
    ("dlopt.models.CNN", True),  # named by conf/
    ("torch.optim.lr_scheduler.warnings", False),  # a module inside an allowed namespace
    ("torch.optim._functional", False),
    ("dlopt.training.report.write_json", False),  # dlopt's own code, but not a target of conf/
    ("builtins.exec", False),
])
def test_the_allowlist(target, allowed):
    from dlopt.saved_run import allowed_targets

    from dlopt.apps import config_dir

    config = OmegaConf.create({"optimizer": {"_target_": target, "_partial_": True}})
    trusted = allowed_targets([Path(config_dir())])
    if allowed:
        check_config(config, "a file", trusted)
    else:
        with pytest.raises(UserError, match=re.escape(f"optimizer._target_={target} is not a target")):
            check_config(config, "a file", trusted)


# --- 4. one line, exit 2, nothing left ---------------------------------------------------------------------


@pytest.mark.parametrize("override, needles", [
    ("optimizer.betas=[0.9]", ("optimizer.betas=[0.9] is not valid", "two numbers in [0, 1)")),
    ("optimizer.betas=[1.5,0.999]", ("optimizer.betas=[1.5, 0.999] is not valid",)),
    ("+model.foo=1", ("model.foo is not a setting of model (dlopt.models.CNN)", "depth, width")),
    ("+optimizer.foo=1", ("optimizer.foo is not a setting of optimizer (torch.optim.Adam)", "lr, betas")),
    ("+data.batchsize=8", ("data.batchsize is not a setting of data", "(did you mean batch_size?)")),
    ("+trainer.foo=1", ("trainer.foo is not a setting of trainer (lightning.pytorch.Trainer)",)),
    ("scheduler.T_max=-5", ("scheduler.T_max=-5 is not valid", "an integer >= 1")),
    ("trainer.limit_train_batches=0", ("trainer.limit_train_batches=0 is not valid", "a number of batches >= 1")),
    ("trainer.limit_val_batches=0", ("trainer.limit_val_batches=0 skips validation", "monitor=val/loss")),
    ("trainer.accelerator=gpu", ("trainer.accelerator=gpu: this machine has no gpu", "trainer.accelerator=auto")),
    ("trainer.accelerator=gpx", ("trainer.accelerator=gpx is not an accelerator", "cpu, cuda")),
    ("data.path=/tmp/ünï.csv", ("data.path=/tmp/ünï.csv: this value must be quoted", "'data.path=\"/tmp/ünï.csv\"'")),
    ("optimizer.lr=interval(0.1", ("optimizer.lr=interval(0.1 is not a valid override",)),
    ("optimizer=rmsprop optimizer.alpha=-1", ("optimizer.alpha=-1 is not valid", "[0, 1]")),
    ("optimizer=sgd +optimizer.nesterov=true", ("optimizer: torch.optim refuses its settings", "Nesterov")),
    ("+trainer.strategy=foo", ("trainer.strategy=foo: Lightning refuses it", "invalid strategy name")),
    ("~model", ("model is missing (~model removes it)",)),
    ("=3", ("=3 has no key",)),
    ("callbacks=[default,emma]", ("callbacks=emma is not an option of callbacks (did you mean ema?)", "default, ema")),
    ("callbacks.progress_bar.refresh_rate=-1", ("callbacks.progress_bar.refresh_rate=-1 is not valid",)),
    ("callbacks=[default,ema] callbacks.ema.update_every_n_steps=0", ("callbacks.ema.update_every_n_steps=0",)),
    ("+logger.save_dir=elsewhere", ("logger.save_dir is set by dlopt", "hydra.run.dir=DIR")),
    ("+callbacks.checkpoint.dirpath=elsewhere", ("callbacks.checkpoint.dirpath is set by dlopt",)),
])
def test_a_mistake_is_one_line_naming_the_key_and_leaves_nothing(in_process, tmp_path, override, needles):
    if "accelerator=gpu" in override and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = in_process.run("train", *in_process.TINY, *override.split(), cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, *needles)
    assert result.returncode == 2 and "Epoch" not in result.output
    nothing_left(tmp_path)


def test_a_quoted_non_ascii_value_is_read_as_written(cli, tmp_path):
    table = tmp_path / "ünï.csv"
    table.write_text("x1,x2,y\n" + "".join(f"{i % 7},{i % 5},{i % 2}\n" for i in range(60)))
    cli.ok("train", "data=csv", f'data.path="{table}"', "data.target=y", *SMALL, *cli.TINY, cwd=tmp_path)
    [run_dir] = cli.run_dirs(tmp_path)
    assert cli.config(run_dir)["data"]["path"] == str(table)


def test_a_yaml_syntax_error_in_a_config_folder_names_the_file_and_line(in_process, tmp_path):
    experiment = tmp_path / "myconf" / "experiment" / "mine.yaml"
    experiment.parent.mkdir(parents=True)
    experiment.write_text("# @package _global_\nmodel:\n  depth: [3\noptimizer:\n  lr: 0.1\n")
    result = in_process.run("train", "--config-dir", str(tmp_path / "myconf"), "experiment=mine", cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, f"{experiment}, line 4, column 10", "not valid YAML")
    nothing_left(tmp_path)


def test_an_experiment_without_its_package_line_is_named(in_process, tmp_path):
    # Hydra would put its keys under experiment.*, where they change nothing, and train the defaults
    experiment = tmp_path / "myconf" / "experiment" / "mine.yaml"
    experiment.parent.mkdir(parents=True)
    experiment.write_text("model:\n  depth: 2\n")
    result = in_process.run("train", "--config-dir", str(tmp_path / "myconf"), "experiment=mine", cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, "experiment: the file has no `# @package _global_` line")
    nothing_left(tmp_path)


def test_a_key_too_long_for_a_file_name_is_one_line(in_process, tmp_path):
    result = in_process.run("train", "k" * 5000 + "=1", cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, "(5000 characters) is not a key of the config")
    assert len(result.stderr) < 400
    nothing_left(tmp_path)


def test_resume_of_a_run_whose_last_checkpoint_holds_code(in_process, finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    (run_dir / "metrics.json").unlink()
    marker = tmp_path / "pwned.txt"
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["extra"] = Payload(str(marker))
    torch.save(checkpoint, run_dir / "checkpoints" / "last.ckpt")
    result = in_process.run("train", f"resume={run_dir}", cwd=tmp_path)
    one_line(result, "resume=", "last.ckpt holds Python objects besides tensors", "never unpickles")
    assert not marker.exists() and not (run_dir / "metrics.json").exists()


def in_namespace(cli, script: str, cwd: Path, *unshare: str, env: dict | None = None):
    """Run a shell script in new Linux namespaces (unshare): a file system of the test's own making,
    or a user without the root's rights. Skips where the machine allows no namespaces."""
    probe = subprocess.run(["unshare", *unshare, "true"], capture_output=True)
    if shutil.which("unshare") is None or probe.returncode:
        pytest.skip(f"unshare {' '.join(unshare)} is not allowed here: {probe.stderr.decode().strip()}")
    proc = subprocess.run(["unshare", *unshare, "sh", "-c", script], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**cli.env(), **(env or {})})
    return proc


def test_an_output_folder_without_write_permission(cli, tmp_path):
    # a user namespace without a mapping: root's files are only their owner's, so 0555 means read-only
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    locked.chmod(0o555)
    proc = in_namespace(cli, f"cd {locked} && exec {cli.exe} train trainer.max_epochs=1", tmp_path, "--user")
    locked.chmod(0o755)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == ("dlopt train: outputs: Permission denied; check its permissions, or write "
                                   "elsewhere (hydra.run.dir=DIR)")
    assert list(locked.iterdir()) == []


def test_an_output_folder_on_a_read_only_file_system(cli, tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    proc = in_namespace(cli, f"mount -t tmpfs -o ro tmpfs {mount} && cd {mount} && exec {cli.exe} train",
                        tmp_path, "--map-root-user", "--mount")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "outputs: Read-only file system; write elsewhere (hydra.run.dir=DIR)" in proc.stderr


def test_a_file_where_the_outputs_folder_should_be(in_process, tmp_path):
    (tmp_path / "outputs").write_text("not a folder\n")
    result = in_process.run("train", *in_process.TINY, cwd=tmp_path)
    one_line(result, "outputs is a file where dlopt needs a folder", "hydra.run.dir=DIR")
    assert (tmp_path / "outputs").read_text() == "not a folder\n"


def test_a_file_where_the_checkpoints_folder_should_be_is_named_before_training(in_process, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "checkpoints").write_text("my notes\n")
    result = in_process.run("train", *in_process.TINY, f"hydra.run.dir={folder}", cwd=tmp_path)
    one_line(result, f"{folder / 'checkpoints'} is a file where dlopt needs a folder")
    assert "Epoch" not in result.output
    assert (folder / "checkpoints").read_text() == "my notes\n" and not (folder / "tensorboard").exists()


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_the_last_good_checkpoint(cli, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (f"mount -t tmpfs -o size=24M tmpfs {disk} && cd {disk} && "
              f"{cli.exe} train {' '.join(cli.TINY[1:])} trainer.max_epochs=4 callbacks=[default,kill] "
              f"{' '.join(FAULTS)} +callbacks.fill._target_=faults.FillDiskAt +callbacks.fill.epoch=2 "
              f"+callbacks.fill.path={disk}/filler > {tmp_path}/out.txt 2>&1; echo $? > {tmp_path}/code; "
              f"rm -f {disk}/filler; cp -r {disk}/outputs {tmp_path}/outputs")
    proc = in_namespace(cli, script, tmp_path, "--map-root-user", "--mount", env=faults_env())
    assert proc.returncode == 0, proc.stderr
    output, code = (tmp_path / "out.txt").read_text(), int((tmp_path / "code").read_text())
    assert code == 2 and "Traceback" not in output and "Logging error" not in output, output[-3000:]
    # one error; the writers that met the full disk before it (TensorBoard's thread, diagnostics.png) warn once
    [line] = [line for line in output.splitlines() if "No space left on device" in line and line.startswith("dlopt train: ")]
    assert re.search(r"outputs/train/[\d-]+/[\d-]+(/checkpoints/(best|last)\.ckpt|/[\w.]+)?: No space left on device",
                     line), line
    assert "continue it with dlopt train resume=" in line
    [run_dir] = [p.parent for p in (tmp_path / "outputs").rglob("checkpoints")]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)  # whole, from before the disk filled
    assert last["epoch"] == 1 and not (run_dir / "metrics.json").exists()
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))


# --- 7. debris ------------------------------------------------------------------------------------------


def test_a_bad_sweep_list_leaves_no_folder(in_process, tmp_path):
    result = in_process.run("train", "-m", "optimizer=sgd,adamx", *in_process.TINY, cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, "optimizer=adamx is not an option of optimizer", "(did you mean adam?)")
    nothing_left(tmp_path)


def test_a_search_stopped_by_its_first_trial_leaves_no_study(in_process, tmp_path):
    result = in_process.run("train", "search=random", "search.params=null", "optimizer.lr=interval(0.001,0.1)",
                     "trainer=ddp", *in_process.TINY, *SMALL, cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, "trainer.devices=2 would start more processes", "hydra/launcher=joblib")
    nothing_left(tmp_path)


def test_too_many_devices_are_refused_before_the_model_is_built(in_process, tmp_path):
    result = in_process.run("train", *in_process.TINY, "trainer.accelerator=cpu", "trainer.devices=64", cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, "trainer.devices=64 starts 64 processes on the CPU")
    assert "FLOPs per sample" not in result.output  # the layer table is not logged first
    nothing_left(tmp_path)


def test_a_failure_inside_the_run_leaves_no_empty_folders(in_process, tmp_path):
    result = in_process.run("train", *in_process.TINY, "data=image_folder", f"data.root={tmp_path / 'nowhere'}",
                            cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, "data.root=")
    nothing_left(tmp_path)


def test_image_size_null_keeps_the_size_as_documented(cli, tmp_path):
    root = cli.image_tree(tmp_path / "pets")
    cli.ok("train", "data=image_folder", f"data.root={root}", "data.image_size=null", *SMALL, *cli.TINY,
           cwd=tmp_path)
    [run_dir] = cli.run_dirs(tmp_path)
    assert cli.metrics(run_dir)["epochs"] == 1


# --- 8. checks that need no torch answer before torch is imported --------------------------------------


@pytest.mark.parametrize("args", [
    ["eval", "run=/nonexistent"],
    ["eval", "ckpt_path=/nonexistent.ckpt"],
    ["train", "resume=/nonexistent"],
    ["train", "optimizer.lr=-1"],
    ["train", "monitor=val/accc"],
    ["tune-lr", "lr_find.min_lr=0"],
])
def test_a_check_that_needs_no_torch_answers_before_torch_is_imported(cli, tmp_path, args):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "dlopt", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=cli.env())
    assert proc.returncode == 2, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "hydra" in imported and not imported & {"torch", "lightning"}, sorted(imported & {"torch", "lightning"})
    nothing_left(tmp_path)


# --- 9. a resumed run's wall time ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_resumed_runs_wall_time_counts_every_process(cli, tmp_path):
    killed = cli.run("train", *FAULTS, "callbacks=[default,kill]", *SMALL, "trainer.max_epochs=4",
                     "trainer.limit_train_batches=8", cwd=tmp_path, env=faults_env(DLOPT_TEST_KILL="1"))
    assert killed.returncode == -9, killed.describe()
    [run_dir] = cli.run_dirs(tmp_path)
    earlier = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["dlopt"]["wall_time_s"]
    resumed = cli.run("train", *FAULTS, f"resume={run_dir}", cwd=tmp_path, env=faults_env())
    assert resumed.returncode == 0, resumed.describe()
    metrics = cli.metrics(run_dir)
    assert earlier > 0 and metrics["wall_time_s"] == pytest.approx(earlier + metrics["process_wall_time_s"], abs=0.5)
