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


# --- resume: bad inputs leave the run folder as it was; what a resume may change, and its record ------------------


@pytest.fixture(scope="module")
def finished_run(cli, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("finished")
    return cli.train(cwd=cwd)


def copy_run(run_dir: Path, into: Path, finished: bool = True) -> Path:
    """A copy of the run to resume; `finished=False`: as if killed after its last epoch's checkpoint (no results)."""
    target = into / "old_run"
    shutil.copytree(run_dir, target)
    if not finished:
        for name in ("metrics.json", "predictions.npz", "curves.png"):
            (target / name).unlink()
    return target


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below the folder, byte for byte."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(dlopt, run_dir: Path, cwd: Path, *overrides: str, needles: tuple[str, ...]) -> str:
    """`dlopt train resume=RUN OVERRIDES` fails in one line holding the needles, exit 2, and changes no byte of the
    run folder (its train.log included); returns that line. `dlopt` runs it: `cli` or `in_process`."""
    before = snapshot(run_dir)
    result = dlopt.run("train", f"resume={run_dir}", *overrides, cwd=cwd)
    line = assert_fails_clearly(result, cwd, f"resume={run_dir}", *needles)
    assert result.returncode == 2
    assert snapshot(run_dir) == before, "the refused resume changed the run folder"
    assert not (cwd / "outputs").exists()
    return line


def test_resume_of_a_finished_run_says_how_to_train_longer(in_process, finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    line = refused(in_process, run_dir, tmp_path, needles=("has already finished", "trainer.max_epochs=N"))
    assert "above its 1" in line and "nothing was changed" in line


@pytest.mark.parametrize("overrides", [("optimizer=sgd",), ("trainer.max_epochs=1",), ("threads=2", "optimizer.lr=0.1"),
                                       ("optimizer=sgd", "resume_changes=true")])
def test_resume_of_a_finished_run_with_nothing_that_extends_it_is_refused(in_process, finished_run, tmp_path,
                                                                         overrides):
    run_dir = copy_run(finished_run, tmp_path)
    refused(in_process, run_dir, tmp_path, *overrides, needles=("has already finished", "trainer.max_epochs=N"))


@pytest.mark.parametrize("overrides, shown", [
    (("optimizer=sgd",), "optimizer._target_ torch.optim.Adam -> torch.optim.SGD"),
    (("model=mlp",), "model._target_ dlopt.models.CNN -> dlopt.models.MLP"),
    (("data=mnist1d",), "data._target_"),
    (("trainer.max_epochs=3", "optimizer.lr=0.01"), "optimizer.lr 0.001 -> 0.01")])
def test_resume_that_would_change_what_was_trained_is_refused(in_process, finished_run, tmp_path, overrides, shown):
    run_dir = copy_run(finished_run, tmp_path, finished=False)
    line = refused(in_process, run_dir, tmp_path, *overrides, needles=("would change what the run trained", shown))
    assert "For a new run: dlopt train" in line and "resume_changes=true" in line and "from epoch 2 on" in line


def test_resume_of_a_run_whose_records_lost_their_first_epochs_is_refused(cli, finished_run, tmp_path):
    """An older dlopt kept only the records after a resume: continuing would extend a record with a gap;
    diagnostics=none continues without per-layer records."""
    run_dir = copy_run(finished_run, tmp_path, finished=False)
    path = run_dir / "diagnostics.jsonl"
    header = path.read_text().splitlines()[0]
    path.write_text(header.replace(', "from_epoch": 1', "") + "\n")  # as the older dlopt left it: the header only
    refused(cli, run_dir, tmp_path, needles=("diagnostics.jsonl holds no record", "history.json starts at epoch 1",
                                             "diagnostics=none"))
    cli.ok("train", f"resume={run_dir}", "diagnostics=none", "trainer.max_epochs=2", cwd=tmp_path)
    assert path.read_text() == header.replace(', "from_epoch": 1', "") + "\n"
    [record] = json.loads((run_dir / "resumes.json").read_text())
    assert record["changed"]["diagnostics._target_"] == {"from": "dlopt.diagnostics.recorder.Recorder"}


def test_resume_changes_true_changes_the_run_from_the_next_epoch_and_records_it(cli, finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    started = snapshot(run_dir / ".hydra")
    cli.ok("train", f"resume={run_dir}", "trainer.max_epochs=3", "optimizer=sgd", "optimizer.lr=0.02",
           "resume_changes=true", cwd=tmp_path)
    assert snapshot(run_dir / ".hydra") == started, ".hydra must keep how the run started"
    [record] = json.loads((run_dir / "resumes.json").read_text())
    assert record["from_epoch"] == 2 and record["overrides"] == ["trainer.max_epochs=3", "optimizer=sgd",
                                                                 "optimizer.lr=0.02", "resume_changes=true"]
    assert record["changed"]["optimizer._target_"] == {"from": "torch.optim.Adam", "to": "torch.optim.SGD"}
    assert record["changed"]["optimizer.betas"] == {"from": [0.9, 0.999]}
    history = json.loads((run_dir / "history.json").read_text())
    # epoch 2 trains with SGD at 0.02 on the cosine of 3 epochs, at its step 1: what the config and record say
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[1]["lr"] == pytest.approx(0.02 * (1 + math.cos(math.pi / 3)) / 2)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert "momentum" in state["optimizer_states"][0]["param_groups"][0], "the checkpoint holds SGD's state"
    assert state["dlopt"]["config"]["optimizer"]["_target_"] == "torch.optim.SGD"
    result = cli.python("from pathlib import Path; from dlopt import saved_run\n"
                        f"c = saved_run.run_config(Path({str(run_dir)!r}), 'x')\n"
                        "print(c['optimizer']['_target_'], c['trainer']['max_epochs'], 'betas' in c['optimizer'])",
                        cwd=tmp_path)
    assert result.stdout.split() == ["torch.optim.SGD", "3", "False"], result.describe()


def test_resume_with_more_epochs_continues_a_finished_run_on_the_longer_schedule(cli, finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
    cli.ok("train", f"resume={run_dir}", "trainer.max_epochs=4", cwd=tmp_path)
    assert cli.metrics(run_dir)["epochs"] == 4
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == overrides and cli.config(run_dir)["trainer"][
        "max_epochs"] == 1, ".hydra says how the run started"
    [record] = json.loads((run_dir / "resumes.json").read_text())
    assert record["from_epoch"] == 2 and record["changed"] == {"trainer.max_epochs": {"from": 1, "to": 4}}
    # cosine's T_max follows trainer.max_epochs: epochs 2-4 are those of a 4-epoch cosine, not a restarted 1-epoch one
    lrs = [r["lr"] for r in json.loads((run_dir / "history.json").read_text())]
    assert lrs[1:] == pytest.approx([1e-3 * (1 + math.cos(math.pi * t / 4)) / 2 for t in (1, 2, 3)])
    assert not (tmp_path / "outputs").exists()  # nothing new besides the resumed folder
    refused(cli, run_dir, tmp_path, needles=("has already finished", "above its 4"))  # its config is the resumed one


def test_resume_keeps_what_a_plateau_schedule_did(cli, tmp_path):
    """ReduceLROnPlateau's reductions carry on through a resume: its counters and the lowered lr are the
    checkpoint's, only its settings the config's."""
    run_dir = cli.train("trainer.max_epochs=3", "scheduler=plateau", "scheduler.patience=0", "scheduler.factor=0.5",
                        "+scheduler.threshold=10", "callbacks.early_stopping=null", cwd=tmp_path)  # never improves
    cli.ok("train", f"resume={run_dir}", "trainer.max_epochs=5", cwd=tmp_path)
    lrs = [r["lr"] for r in json.loads((run_dir / "history.json").read_text())]
    assert len(lrs) == 5 and lrs[1] < lrs[0] and lrs == sorted(lrs, reverse=True), lrs


def test_resume_with_more_patience_trains_on_after_early_stopping(cli, tmp_path):
    """Lightning restores early stopping's patience from the checkpoint; the resumed run uses the config's."""
    (tmp_path / "here").mkdir()
    run_dir = cli.train("trainer.max_epochs=8", "callbacks.early_stopping.patience=1",
                        "callbacks.early_stopping.min_delta=10", cwd=tmp_path)  # never improves by 10: stops at 2
    assert cli.metrics(run_dir)["epochs"] == 2 and cli.metrics(run_dir)["stopped_early"]
    refused(cli, run_dir, tmp_path / "here", "trainer.max_epochs=9", needles=("early stopping ended it at epoch 2",
                                                                     "callbacks.early_stopping.patience=N above its 1"))
    cli.ok("train", f"resume={run_dir}", "callbacks.early_stopping.patience=3", cwd=tmp_path)
    assert cli.metrics(run_dir)["epochs"] == 4  # waits 3 epochs after its best (epoch 1), not 1


def test_resume_names_a_key_this_dlopt_no_longer_has(in_process, finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path, finished=False)
    config = run_dir / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("model:\n", "model:\n  old_knob: 3\n", 1))
    refused(in_process, run_dir, tmp_path, needles=("this dlopt no longer has model.old_knob",))


def test_resume_of_a_run_whose_overrides_no_longer_compose_says_why(in_process, finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path, finished=False)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- model=resnot\n")
    line = refused(in_process, run_dir, tmp_path,
                   needles=("do not compose with this dlopt", "model=resnot is not an option"))
    assert "did you mean resnet?" in line


def test_resume_of_a_run_with_a_damaged_record_of_resumes_names_it(in_process, finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path, finished=False)
    (run_dir / "resumes.json").write_text('[{"from_epoch": "two"}]\n')
    refused(in_process, run_dir, tmp_path, needles=("resumes.json is not a list of dlopt's resume records",))


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
def test_resume_of_a_folder_that_is_not_a_resumable_run(in_process, tmp_path, kind, needle):
    folder = not_resumable(tmp_path, kind)
    result = in_process.run("train", f"resume={folder}", cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, f"resume={folder}", needle)
    assert result.returncode == 2 and not (tmp_path / "outputs").exists()


def test_resume_with_multirun_says_to_drop_it(in_process, finished_run, tmp_path):
    result = in_process.run("train", "-m", f"resume={finished_run}", cwd=tmp_path)
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


def test_a_foreign_checkpoint_never_runs_code(in_process, tmp_path):
    marker = tmp_path / "pwned.txt"
    with open(tmp_path / "evil.ckpt", "wb") as f:
        pickle.dump({"state_dict": {}, "dlopt": {"config": {}}, "x": Payload(str(marker))}, f)
    result = in_process.run("eval", f"ckpt_path={tmp_path / 'evil.ckpt'}", cwd=tmp_path)
    assert_fails_clearly(result, tmp_path, "evil.ckpt", "expected a checkpoint written by dlopt train")
    assert not marker.exists()


def test_callbacks_default_comma_ema_means_both_in_one_run(cli, tmp_path):
    result = cli.ok("train", "callbacks=default,ema", "--cfg", "job", cwd=tmp_path, timeout=60)
    assert "EMAWeightAveraging" in result.stdout and "EarlyStopping" in result.stdout
