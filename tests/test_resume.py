"""End to end: a run killed with SIGKILL mid-epoch resumes to the same numbers; resume's bad
inputs; torch.compile; checkpoints from elsewhere never run code; callbacks=default,ema."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from faults import Payload
from test_bad_inputs import assert_fails_clearly

TESTS = str(Path(__file__).parent)
FAULTS = ("--config-dir", str(Path(TESTS) / "conf"))  # callbacks/kill.yaml: faults.KillAt (a trusted config folder)
# dropout and augmentation make the result depend on the random generator's state at the resume
RESUMABLE = (*FAULTS, "trainer.max_epochs=4", "trainer.limit_train_batches=12", "augmentation=light",
             "regularization=dropout", "callbacks=[default,kill]")


def env(kill: bool = False) -> dict[str, str]:
    path = os.pathsep.join(p for p in (TESTS, os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "DLOPT_TEST_KILL": "1" if kill else "0"}


def only_run_dir(cli, cwd: Path) -> Path:
    [run_dir] = cli.run_dirs(cwd)
    return run_dir


@pytest.fixture(scope="module")
def killed_and_resumed(cli, tmp_path_factory):
    """(killed run folder before and after resuming, the uninterrupted run's folder)."""
    cwd = tmp_path_factory.mktemp("kill")
    killed = cli.run("train", *RESUMABLE, cwd=cwd, env=env(kill=True))
    assert killed.returncode == -9, killed.describe()  # SIGKILL: no cleanup ran
    run_dir = only_run_dir(cli, cwd)
    before = {"files": sorted(p.name for p in run_dir.iterdir()),
              "last_epoch": torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]}
    resumed = cli.run("train", *FAULTS, f"resume={run_dir}", cwd=cwd, env=env())
    assert resumed.returncode == 0 and "Traceback" not in resumed.output, resumed.describe()
    reference = tmp_path_factory.mktemp("reference")
    result = cli.run("train", *RESUMABLE, cwd=reference, env=env())
    assert result.returncode == 0, result.describe()
    return before, resumed, run_dir, only_run_dir(cli, reference)


def test_killed_run_left_its_last_checkpoint_and_no_results(killed_and_resumed):
    before, *_ = killed_and_resumed
    assert before["last_epoch"] == 1  # killed in epoch 2: the last finished epoch is 1
    assert "metrics.json" not in before["files"] and "curves.png" not in before["files"]


def test_resumed_run_ends_with_the_uninterrupted_runs_numbers(cli, killed_and_resumed):
    _, resumed, run_dir, reference = killed_and_resumed
    got, want = cli.metrics(run_dir), cli.metrics(reference)
    for key in ("wall_time_s", "process_wall_time_s"):
        got.pop(key), want.pop(key)
    assert got == want
    assert got["epochs"] == 4
    assert cli.run_dirs(run_dir.parents[3]) == [run_dir], "resume made another run folder"
    assert "resuming" in resumed.output and "step 24" in resumed.output  # 2 epochs x 12 batches


def test_resumed_run_keeps_one_tensorboard_run_without_the_lost_steps(killed_and_resumed):
    _, _, run_dir, _ = killed_and_resumed
    assert [p.name for p in run_dir.iterdir() if p.name == "tensorboard"] == ["tensorboard"]
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) >= 2  # one per process
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    epochs = [e.step for e in events.Scalars("val/loss")]
    assert len(epochs) == 4 and epochs == sorted(set(epochs))
    grads = [e.step for e in events.Scalars("grad/norm")]
    assert grads == sorted(set(grads)), "the killed process's steps after the checkpoint still show"


def test_resume_log_appends_to_the_runs_log(killed_and_resumed):
    _, _, run_dir, _ = killed_and_resumed
    log = (run_dir / "train.log").read_text()
    assert log.count("model: ") == 2 and "resuming" in log


# --- resume: bad inputs ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(cli, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("finished")
    return cli.train(cwd=cwd)


def copy_run(run_dir: Path, into: Path) -> Path:
    import shutil

    target = into / "old_run"
    shutil.copytree(run_dir, target)
    return target


def test_resume_of_a_finished_run_says_how_to_train_longer(cli, finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    result = cli.run("train", f"resume={run_dir}", cwd=tmp_path)
    line = assert_fails_clearly(result, tmp_path, f"resume={run_dir} has already finished", "trainer.max_epochs=N")
    assert result.returncode == 2 and "above its 1" in line
    assert (run_dir / "metrics.json").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_resume_with_more_epochs_continues_a_finished_run(cli, finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    cli.ok("train", f"resume={run_dir}", "trainer.max_epochs=2", cwd=tmp_path)
    assert cli.metrics(run_dir)["epochs"] == 2
    assert "trainer.max_epochs=2" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert cli.config(run_dir)["trainer"]["max_epochs"] == 2
    assert not (tmp_path / "outputs").exists()  # nothing new besides the resumed folder


def test_resume_names_a_key_this_dlopt_no_longer_has(cli, finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    config = run_dir / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("model:\n", "model:\n  old_knob: 3\n", 1))
    (run_dir / "metrics.json").unlink()
    result = cli.run("train", f"resume={run_dir}", cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, f"resume={run_dir}: this dlopt no longer has model.old_knob")
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_resume_of_a_run_whose_overrides_no_longer_compose_says_why(cli, finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- model=resnot\n")
    (run_dir / "metrics.json").unlink()
    result = cli.run("train", f"resume={run_dir}", cwd=tmp_path)
    line = assert_fails_clearly(result, tmp_path, "do not compose with this dlopt", "model=resnot is not an option")
    assert "did you mean resnet?" in line


def not_resumable(root: Path, kind: str) -> Path:
    folder = root / kind
    if kind == "plain":
        folder.mkdir()
    elif kind == "early":  # killed before its first epoch ended
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
    return folder


@pytest.mark.parametrize("kind, needle", [("nowhere", "does not exist"), ("plain", "is not a dlopt train run folder"),
                                          ("early", "has no checkpoints/last.ckpt")])
def test_resume_of_a_folder_that_is_not_a_resumable_run(cli, tmp_path, kind, needle):
    folder = not_resumable(tmp_path, kind)
    result = cli.run("train", f"resume={folder}", cwd=tmp_path, timeout=60)
    assert_fails_clearly(result, tmp_path, f"resume={folder}", needle)
    assert result.returncode == 2 and not (tmp_path / "outputs").exists()


def test_resume_with_multirun_says_to_drop_it(cli, finished_run, tmp_path):
    result = cli.run("train", "-m", f"resume={finished_run}", cwd=tmp_path, timeout=60)
    assert_fails_clearly(result, tmp_path, "cannot be combined with -m")
    assert not (tmp_path / "outputs").exists()


# --- compile, foreign checkpoints, weight averaging from the command line ----------------------------------


@pytest.mark.slow
def test_compiled_model_trains_and_its_checkpoint_loads_into_a_plain_model(cli, tmp_path):
    run_dir = cli.train("model.compile=true", cwd=tmp_path, timeout=600)
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert not [k for k in state if "_orig_mod" in k]
    result = cli.python(
        "import torch; from omegaconf import OmegaConf; from dlopt.training.run import build\n"
        f"ckpt = torch.load({str(run_dir / 'checkpoints' / 'best.ckpt')!r}, weights_only=True)\n"
        "cfg = OmegaConf.create(ckpt['dlopt']['config']); cfg.model.compile = False\n"
        "_, module = build(cfg); module.load_state_dict(ckpt['state_dict'], strict=True); print('loaded')",
        cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and "loaded" in result.stdout, result.describe()


def test_a_foreign_checkpoint_never_runs_code(cli, tmp_path):
    marker = tmp_path / "pwned.txt"
    with open(tmp_path / "evil.ckpt", "wb") as f:
        pickle.dump({"state_dict": {}, "dlopt": {"config": {}}, "x": Payload(str(marker))}, f)
    result = cli.run("eval", f"ckpt_path={tmp_path / 'evil.ckpt'}", cwd=tmp_path, timeout=60)
    assert_fails_clearly(result, tmp_path, "evil.ckpt", "expected a checkpoint written by dlopt train")
    assert not marker.exists()


def test_callbacks_default_comma_ema_means_both_in_one_run(cli, tmp_path):
    result = cli.ok("train", "callbacks=default,ema", "--cfg", "job", cwd=tmp_path, timeout=60)
    assert "EMAWeightAveraging" in result.stdout and "EarlyStopping" in result.stdout
