"""What a search reports (issue 16, items 11-14): its progress lines (trial numbers from 0, as the run folders;
sampled values to 4 significant digits), interrupted trials told apart from failed ones, the sweep summary's header
with monitor=val/acc, and readable plots (short knob names; pruned trials in history.png)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution, IntDistribution

from dlopt.search import sweeper
from dlopt.summary import collect, rounded_overrides, write

SMALL = ("model=mlp", "model.width=16", "search.params=null")
SPACE = ("optimizer.lr=interval(0.001,0.1)", "model.depth=range(1,3)")


def study_of(sweep: Path) -> optuna.Study:
    return optuna.load_study(study_name=sweep.name, storage=f"sqlite:///{sweep / 'study.db'}")


def rows_of(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def continued(cli, tmp_path_factory):
    """Two tiny trials; then a trial left running with a run folder but no metrics.json (a killed sweep);
    then the same study continued to three trials."""
    cwd = tmp_path_factory.mktemp("continued")
    args = ("train", "search=random", "search.study_name=c", *SMALL, *cli.TINY, *SPACE)
    first = cli.ok(*args, "search.n_trials=2", cwd=cwd)
    sweep = cwd / "outputs" / "train" / "search" / "c"
    killed = study_of(sweep).ask({"optimizer.lr": FloatDistribution(0.001, 0.1), "model.depth": IntDistribution(1, 2)})
    shutil.copytree(sweep / "0" / ".hydra", sweep / str(killed.number) / ".hydra")
    second = cli.ok(*args, "search.n_trials=3", cwd=cwd)
    return sweep, first, second, killed.number


def test_progress_lines_number_trials_from_0_as_the_run_folders_with_rounded_values(continued):
    sweep, first, _, _ = continued
    lines = [line for line in first.output.splitlines() if "search: trial " in line]
    assert len(lines) == 2, first.describe()
    for number, line in enumerate(lines):
        assert f"search: trial {number} ({number + 1} of 2 finished): val/loss=" in line, line
        lr = study_of(sweep).trials[number].params["optimizer.lr"]
        assert f"optimizer.lr={lr:.4g} " in line and repr(lr) not in line  # the full value stays in the files
        assert yaml.safe_load((sweep / str(number) / ".hydra" / "config.yaml").read_text())["optimizer"]["lr"] == lr
        assert (sweep / str(number)).is_dir()
    assert "(#" not in first.output


def test_summary_md_rounds_sampled_values_and_summary_csv_keeps_them(continued):
    sweep = continued[0]
    lr = study_of(sweep).trials[0].params["optimizer.lr"]
    assert f"optimizer.lr={lr:.4g}" in (sweep / "summary.md").read_text()
    assert any(f"optimizer.lr={lr}" in row["overrides"] for row in rows_of(sweep))


def test_an_interrupted_trial_is_listed_as_interrupted_and_rerun_not_failed(continued):
    sweep, _, second, killed = continued
    rerun = killed + 1
    assert f"trial {killed} was interrupted; its parameters run again as trial {rerun}" in second.output
    rows = {row["run"]: row for row in rows_of(sweep)}
    assert rows[str(killed)]["status"] == "interrupted", rows
    assert rows[str(killed)]["error"] == f"interrupted; re-run as trial {rerun}"
    assert rows[str(rerun)]["status"] in ("done", "failed", "pruned")
    assert not any(row["status"] == "failed" for row in rows.values())
    assert re.search(r"sweep summary \(4 runs, 0 pruned, 0 failed, 1 interrupted;", second.output), second.describe()
    assert re.search(r"search c ended: 3 done, 0 pruned, 0 failed, 1 interrupted \(re-run\); best val/loss=",
                     second.output), second.describe()
    trial = study_of(sweep).trials[killed]
    assert trial.user_attrs["interrupted"] is True and trial.user_attrs["rerun"] == rerun
    assert list(rows)[-1] == str(killed)  # listed last, after the finished runs


def test_search_plots_are_written(continued):
    sweep = continued[0]
    for png in ("history.png", "parallel_coordinates.png"):
        assert (sweep / png).stat().st_size > 10_000, png


def _metrics(objective, monitor):
    return {"objective": objective, "mode": "max", "monitor": monitor, "val/acc": objective, "test/acc": 0.4,
            "test/f1": 0.3, "epochs": 1, "wall_time_s": 1.0, "seed": 0}


def test_the_summary_names_the_monitored_metric_once(tmp_path):
    for name, value in (("0", 0.7), ("1", 0.9)):
        run = tmp_path / name
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"a={name}"]))
        (run / "metrics.json").write_text(json.dumps(_metrics(value, "val/acc")))
    write(collect(tmp_path), tmp_path, "val/acc")
    with open(tmp_path / "summary.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header.count("val/acc") == 1 and header[3] == "val/acc"
    md = (tmp_path / "summary.md").read_text().splitlines()
    assert md[0].count("val/acc") == 1 and md[2].startswith("| 1 | a=1 | done | 0.9000 | 0.4000 |")
    write(collect(tmp_path), tmp_path, "val/loss")  # another monitor keeps the val/acc column
    with open(tmp_path / "summary.csv", newline="") as f:
        assert next(csv.reader(f))[3:5] == ["val/loss", "val/acc"]


def test_rounded_overrides_round_floats_only():
    assert rounded_overrides("optimizer.lr=0.0012345678 model.depth=3 optimizer=adam x=3.0 y=1e-05") == \
        "optimizer.lr=0.001235 model.depth=3 optimizer=adam x=3.0 y=1e-05"


def test_history_shows_pruned_trials_and_parallel_coordinates_use_short_names(tmp_path):
    study = optuna.create_study(study_name="p", direction="minimize")
    space = {"regularization.dropout": FloatDistribution(0, 0.5), "optimizer.lr": FloatDistribution(1e-4, 0.1)}
    for i in range(5):
        trial = study.ask(space)
        trial.report(1.0 + i, 0)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED) if i % 2 else study.tell(trial, 0.5 + i)
    study.tell(study.ask(space), state=optuna.trial.TrialState.FAIL)
    labels = sweeper._history(study, tmp_path / "history.png", "val/loss")  # noqa: SLF001
    assert labels == ["done (3)", "best so far", "pruned (2; value when stopped)", "failed or interrupted (1)"]
    assert sweeper.short_names(["regularization.dropout", "optimizer.lr", "model.lr", "seed"]) == {
        "regularization.dropout": "dropout", "optimizer.lr": "optimizer.lr", "model.lr": "model.lr", "seed": "seed"}
    sweeper.write_plots(study, tmp_path, "val/loss")
    for png in ("history.png", "parallel_coordinates.png", "importances.png"):
        assert (tmp_path / png).stat().st_size > 10_000, png
