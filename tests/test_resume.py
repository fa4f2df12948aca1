"""End to end: a run killed with SIGKILL again and again (mid-epoch, at an epoch's start, during validation, while a
checkpoint is written) and resumed each time ends with what the uninterrupted run has, file by file; a resume only
appends to the run's record (resumes.json), refuses what would falsify it, and trains what its config says;
resume's bad inputs leave the run folder byte for byte as it was; torch.compile; checkpoints from elsewhere never
run code; callbacks=default,ema."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from faults import Payload
from test_bad_inputs import assert_fails_clearly

TESTS = str(Path(__file__).parent)
FAULTS = ("--config-dir", str(Path(TESTS) / "conf"))  # callbacks/kill.yaml: faults.KillAt (a trusted config folder)
# dropout and augmentation make the result depend on the random generator's state at the resume; diagnostics every
# 5 steps and histograms every 2nd epoch, so that each epoch holds several records
RESUMABLE = (*FAULTS, "trainer.max_epochs=7", "trainer.limit_train_batches=12", "augmentation=light",
             "regularization=dropout", "callbacks=[default,kill]", "diagnostics.every_n_steps=5",
             "diagnostics.every_n_epochs=2")
# where each process of the killed run dies (faults.KillAt): epoch 3 mid-way (1: the config's epoch=2 batch=5, from
# 0), then at epoch 4's start, in epoch 5's validation, while epoch 6's second checkpoint (last.ckpt) is written;
# the last resume finishes it
KILLS = ("1", "4:start", "5:validation", "6:checkpoint2", "0")


def env(kill: str = "0") -> dict[str, str]:
    path = os.pathsep.join(p for p in (TESTS, os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "DLOPT_TEST_KILL": kill}


def only_run_dir(cli, cwd: Path) -> Path:
    [run_dir] = cli.run_dirs(cwd)
    return run_dir


@pytest.fixture(scope="module")
def killed_and_resumed(cli, tmp_path_factory):
    """(the killed run's folder and last epoch after its first kill, the outputs of its resumes, its folder, the
    uninterrupted run's folder)."""
    cwd = tmp_path_factory.mktemp("kill")
    killed = cli.run("train", *RESUMABLE, cwd=cwd, env=env(KILLS[0]))
    assert killed.returncode == -9, killed.describe()  # SIGKILL: no cleanup ran
    run_dir = only_run_dir(cli, cwd)
    before = {"files": sorted(p.name for p in run_dir.iterdir()),
              "last_epoch": torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]}
    resumes = []
    for kill in KILLS[1:]:
        resumed = cli.run("train", *FAULTS, f"resume={run_dir}", cwd=cwd, env=env(kill))
        assert resumed.returncode == (0 if kill == "0" else -9) and "Traceback" not in resumed.output, \
            resumed.describe()
        resumes.append(resumed)
    reference = tmp_path_factory.mktemp("reference")
    result = cli.run("train", *RESUMABLE, cwd=reference, env=env())
    assert result.returncode == 0, result.describe()
    return before, resumes, run_dir, only_run_dir(cli, reference)


def test_killed_run_left_its_last_checkpoint_and_no_results(killed_and_resumed):
    before, *_ = killed_and_resumed
    assert before["last_epoch"] == 1  # killed in epoch 3 (epoch 2 counted from 0): the last finished is the 2nd
    assert "metrics.json" not in before["files"] and "curves.png" not in before["files"]


def test_resumed_run_ends_with_the_uninterrupted_runs_numbers(cli, killed_and_resumed):
    _, resumes, run_dir, reference = killed_and_resumed
    got, want = cli.metrics(run_dir), cli.metrics(reference)
    for key in ("wall_time_s", "process_wall_time_s"):
        got.pop(key), want.pop(key)
    assert got == want
    assert got["epochs"] == 7
    assert cli.run_dirs(run_dir.parents[3]) == [run_dir], "resume made another run folder"
    assert "resuming" in resumes[0].output and "step 24" in resumes[0].output  # 2 epochs x 12 batches


def test_every_record_of_the_resumed_run_is_the_uninterrupted_runs(killed_and_resumed):
    """diagnostics.jsonl (the records dropped before a resume, the ones written after its checkpoint kept twice),
    history.json and the warnings in metrics.json, after four kills."""
    _, _, run_dir, reference = killed_and_resumed

    def records(folder: Path) -> list[dict]:
        return [json.loads(line) for line in (folder / "diagnostics.jsonl").read_text().splitlines()]

    got, want = records(run_dir), records(reference)
    assert [(r["kind"], r.get("epoch"), r.get("step")) for r in got] == \
        [(r["kind"], r.get("epoch"), r.get("step")) for r in want]
    assert got == want
    assert {r["epoch"] for r in got if r["kind"] == "activations"} == set(range(1, 8))
    assert json.loads((run_dir / "history.json").read_text()) == json.loads((reference / "history.json").read_text())
    assert not list(run_dir.rglob("*.tmp")), "the half-written checkpoint's temporary file is still there"


def _events(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    return events


def test_resumed_run_keeps_one_tensorboard_run_with_the_uninterrupted_runs_steps(killed_and_resumed):
    """Every scalar (val/loss, grad/norm, diagnostics/*) at the same steps with the same values, every histogram at the
    same steps: what the killed processes logged after their checkpoint is hidden (purge_step), nothing before it."""
    _, _, run_dir, reference = killed_and_resumed
    assert [p.name for p in run_dir.iterdir() if p.name == "tensorboard"] == ["tensorboard"]
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) >= 5  # one or more per process
    got, want = _events(run_dir), _events(reference)
    assert sorted(got.Tags()["scalars"]) == sorted(want.Tags()["scalars"])
    assert any(t.startswith("diagnostics/dead/") for t in want.Tags()["scalars"])
    for tag in want.Tags()["scalars"]:
        assert [(e.step, e.value) for e in got.Scalars(tag)] == [(e.step, e.value) for e in want.Scalars(tag)], tag
    assert sorted(got.Tags()["histograms"]) == sorted(want.Tags()["histograms"])
    for tag in want.Tags()["histograms"]:
        assert [e.step for e in got.Histograms(tag)] == [e.step for e in want.Histograms(tag)], tag


def test_resumed_runs_log_ends_each_epoch_as_the_uninterrupted_one(killed_and_resumed):
    """train.log only appends: an epoch the killed process finished after its checkpoint is there twice, and the last
    line of each epoch is the uninterrupted run's."""
    _, _, run_dir, reference = killed_and_resumed

    def epoch_lines(folder: Path) -> dict[str, str]:
        lines = re.findall(r"\] - (epoch (\d+)/7: .*)$", (folder / "train.log").read_text(), re.M)
        return {epoch: line for line, epoch in lines}  # the last line of each epoch

    log = (run_dir / "train.log").read_text()
    assert log.count("model: ") == 5 and log.count("resuming") == 4
    assert epoch_lines(run_dir) == epoch_lines(reference) and len(epoch_lines(reference)) == 7


def test_resumes_are_recorded_and_doctor_says_what_it_says_of_the_uninterrupted_run(cli, killed_and_resumed,
                                                                                      tmp_path):
    _, _, run_dir, reference = killed_and_resumed
    records = json.loads((run_dir / "resumes.json").read_text())
    assert [(r["from_epoch"], r["overrides"], r["changed"]) for r in records] == \
        [(3, [], {}), (4, [], {}), (5, [], {}), (6, [], {})]
    reports = [[line.replace(str(folder), "RUN") for line in cli.ok("doctor", f"run={folder}", cwd=tmp_path).stdout
                .splitlines() if not line.startswith("[")] for folder in (run_dir, reference)]  # without log lines
    assert reports[0] == reports[1] and reports[0][0] == "RUN:"


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
