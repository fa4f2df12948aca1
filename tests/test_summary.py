"""Tests of dlopt.summary on a sweep folder written by hand (no training needed)."""

import csv
import json

import pytest
import yaml
from omegaconf import OmegaConf

from dlopt.summary import COLUMNS, SweepSummary, collect, write, write_best


def make_run(sweep, name, overrides, metrics=None):
    run = sweep / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def metrics(objective, mode="min", monitor="val/loss", **extra):
    return {"objective": objective, "mode": mode, "monitor": monitor, "val/acc": 0.5, "test/acc": 0.4,
            "test/f1": 0.3, "epochs": 3, "wall_time_s": 1.25, "seed": 0, **extra}


@pytest.fixture
def sweep_min(tmp_path):
    make_run(tmp_path, "0", ["optimizer.lr=0.1"], metrics(0.9))
    make_run(tmp_path, "1", ["optimizer.lr=0.01"], metrics(0.2))
    make_run(tmp_path, "2", ["optimizer.lr=0.001"])  # failed: no metrics.json
    make_run(tmp_path, "3", ["optimizer.lr=0.0001", "model=mlp"], metrics(0.5))
    make_run(tmp_path, "10", ["optimizer.lr=1.0"], metrics(1.5))
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")  # Hydra's own file: not a run
    (tmp_path / "notes").mkdir()  # a folder without .hydra: not a run
    return tmp_path


def test_collect_sorts_ascending_for_min_with_failed_runs_last(sweep_min):
    rows = collect(sweep_min)
    assert [r["run"] for r in rows] == ["1", "3", "0", "10", "2"]
    assert [r["status"] for r in rows] == ["done"] * 4 + ["failed"]
    assert [r["objective"] for r in rows[:4]] == [0.2, 0.5, 0.9, 1.5]
    assert rows[0]["overrides"] == "optimizer.lr=0.01"
    assert rows[1]["overrides"] == "optimizer.lr=0.0001 model=mlp"
    assert rows[0]["val/acc"] == 0.5 and rows[0]["epochs"] == 3 and rows[0]["wall_time_s"] == 1.25
    failed = rows[-1]
    assert failed["overrides"] == "optimizer.lr=0.001"
    assert failed.get("objective") is None


def test_collect_sorts_descending_for_max(tmp_path):
    make_run(tmp_path, "0", ["a=1"], metrics(0.70, mode="max", monitor="val/acc"))
    make_run(tmp_path, "1", ["a=2"])
    make_run(tmp_path, "2", ["a=3"], metrics(0.95, mode="max", monitor="val/acc"))
    make_run(tmp_path, "3", ["a=4"], metrics(0.10, mode="max", monitor="val/acc"))
    rows = collect(tmp_path)
    assert [r["run"] for r in rows] == ["2", "0", "3", "1"]
    assert rows[-1]["status"] == "failed"


def test_collect_with_only_failed_runs(tmp_path):
    make_run(tmp_path, "0", ["a=1"])
    make_run(tmp_path, "1", [])
    rows = collect(tmp_path)
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert rows[1]["overrides"] == ""


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_write_makes_csv_and_markdown_with_the_monitor_in_the_header(sweep_min):
    rows = collect(sweep_min)
    write(rows, sweep_min, "val/loss")
    table = read_csv(sweep_min / "summary.csv")
    header = table[0]
    assert header == ["run", "overrides", "status", "val/loss", "val/acc", "test/acc", "test/f1", "epochs",
                      "wall_time_s", "error"]
    assert "objective" not in header
    assert len(table) == 1 + 5
    assert [line[0] for line in table[1:]] == ["1", "3", "0", "10", "2"]
    best = dict(zip(header, table[1]))
    assert best["status"] == "done" and float(best["val/loss"]) == 0.2 and best["overrides"] == "optimizer.lr=0.01"
    failed = dict(zip(header, table[-1]))
    assert failed["status"] == "failed" and failed["val/loss"] == "" and failed["test/acc"] == ""
    assert failed["error"] == "no metrics.json" and best["error"] == ""

    md = (sweep_min / "summary.md").read_text().splitlines()
    assert md[0] == "| " + " | ".join(header) + " |"
    assert set(md[1].replace("|", "")) == {"-"} and md[1].count("|") == len(header) + 1
    assert len(md) == 2 + 5
    assert md[2].startswith("| 1 | optimizer.lr=0.01 | done | 0.2000 |")
    assert md[-1].startswith("| 2 | optimizer.lr=0.001 | failed |  |")
    for line in md:
        assert line.count("|") == len(COLUMNS) + 1


def test_write_uses_whatever_monitor_it_is_given(tmp_path):
    make_run(tmp_path, "0", ["a=1"], metrics(0.8, mode="max", monitor="val/acc"))
    write(collect(tmp_path), tmp_path, "val/acc")
    assert read_csv(tmp_path / "summary.csv")[0][3] == "val/acc"
    assert "| val/acc |" in (tmp_path / "summary.md").read_text()


def test_the_hydra_callback_writes_the_summary_into_the_sweep_folder(sweep_min):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_min)}}, "monitor": "val/loss"})
    SweepSummary().on_multirun_end(config)
    assert read_csv(sweep_min / "summary.csv")[0][3] == "val/loss"
    assert [line[0] for line in read_csv(sweep_min / "summary.csv")[1:]] == ["1", "3", "0", "10", "2"]
    assert (sweep_min / "summary.md").is_file()


def test_the_hydra_callback_does_nothing_without_a_sweep_folder(tmp_path):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "missing")}}, "monitor": "val/loss"})
    SweepSummary().on_multirun_end(config)
    assert not (tmp_path / "missing").exists()


def test_a_failed_run_shows_its_reason(tmp_path):
    make_run(tmp_path, "0", ["optimizer.lr=1e6"])
    (tmp_path / "0" / "error.txt").write_text("the training loss became nan at epoch 0, step 2\n")
    [row] = collect(tmp_path)
    assert row["status"] == "failed" and row["error"].startswith("the training loss became nan")


def test_a_search_sweep_lists_pruned_runs_after_done_ones_and_writes_best_yaml(tmp_path):
    common = ["search=bayes", "trainer.max_epochs=5"]
    make_run(tmp_path, "0", [*common, "optimizer.lr=0.1", "search.trial=0"], metrics(0.9))
    make_run(tmp_path, "1", [*common, "optimizer.lr=0.3", "search.trial=1"], metrics(0.1, pruned=True))
    make_run(tmp_path, "2", [*common, "optimizer.lr=0.01", "search.trial=2"], metrics(0.2))
    make_run(tmp_path, "3", [*common, "optimizer.lr=9", "search.trial=3"])
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}, "job": {"name": "train"}},
                               "monitor": "val/loss"})
    SweepSummary().on_multirun_end(config)
    rows = read_csv(tmp_path / "summary.csv")[1:]
    assert [(r[0], r[2]) for r in rows] == [("2", "done"), ("0", "done"), ("1", "pruned"), ("3", "failed")]
    assert rows[0][1] == "search=bayes trainer.max_epochs=5 optimizer.lr=0.01"  # the trial number is not a choice
    md = (tmp_path / "summary.md").read_text().splitlines()
    assert md[0] == "All runs: `search=bayes trainer.max_epochs=5`"
    assert md[4].startswith("| 2 | optimizer.lr=0.01 | done | 0.2000 |")
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best == {"run": "2", "val/loss": 0.2, "overrides": ["trainer.max_epochs=5", "optimizer.lr=0.01"]}
    assert "#   dlopt train trainer.max_epochs=5 optimizer.lr=0.01\n" in (tmp_path / "best.yaml").read_text()


def test_no_best_yaml_when_every_run_failed(tmp_path):
    make_run(tmp_path, "0", ["optimizer.lr=9"])
    assert write_best(collect(tmp_path), tmp_path, "val/loss", "train") is None
    assert not (tmp_path / "best.yaml").exists()
