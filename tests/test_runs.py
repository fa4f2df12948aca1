"""`dlopt runs` (issue 17): list, filter, sort, group and compare run folders (dlopt/apps/runs.py, dlopt/runs/).

Most tests build run folders by hand (.hydra/, metrics.json, history.json, error.txt, logs) and call
dlopt.runs.listing, groups and compare directly; the end-to-end tests run the real command on such folders, and
one module fixture trains a tiny sweep of 4 runs to read with it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import statistics
import time
from pathlib import Path

import pytest
import yaml
from scipy.stats import ttest_ind

from dlopt.errors import UserError
from dlopt.runs import compare, groups, listing

CONFIG = {"seed": 0, "model": {"depth": 3}, "optimizer": {"lr": 0.001}, "trainer": {"max_epochs": 3}}
ERROR_LINE = "[2026-01-01 10:00:00,000][dlopt.training.run][ERROR] - {}\n"


def make_run(root, name, overrides=(), metrics=None, choices=None, config=None, history=None, job="train",
             files=None, age=None, config_dirs=()) -> Path:
    """A run folder as dlopt leaves it: .hydra/{overrides,config,hydra}.yaml and the files given; `age` seconds old;
    `config_dirs`: the --config-dir folders its command line gave."""
    run = Path(root) / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides) or "[]\n")
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config or CONFIG))
    picks = {"model": "cnn", "optimizer": "adam", **(choices or {})}
    sources = [{"path": "hydra.conf", "schema": "pkg", "provider": "hydra"},
               *({"path": str(d), "schema": "file", "provider": "command-line"} for d in config_dirs)]
    (run / ".hydra" / "hydra.yaml").write_text(
        f"hydra:\n  job:\n    name: {job}\n    chdir: false\n  runtime:\n    version: 1.3.8\n    config_sources:\n"
        + "".join(f"    - path: {s['path']}\n      schema: {s['schema']}\n      provider: {s['provider']}\n"
                  for s in sources) + f"    output_dir: {run}\n    choices:\n"
        + "".join(f"      {k}: {v}\n" for k, v in picks.items()) + "      hydra/env: default\n  verbose: false\n")
    if metrics is not None:
        (run / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    if history is not None:
        (run / "history.json").write_text(json.dumps(history))
    for file, text in (files or {}).items():
        (run / file).write_text(text)
    if age is not None:
        for path in [*run.rglob("*"), run]:
            os.utime(path, (time.time() - age,) * 2)
    return run


def done(objective, acc=None, **extra) -> dict:
    return {"objective": objective, "mode": "min", "monitor": "val/loss", "test/acc": acc, "test/loss": objective,
            "test/ece": 0.05, "epochs": 3, "wall_time_s": 1.5, "params": 1000, "pruned": False, **extra}


def curve(*losses) -> list[dict]:
    return [{"epoch": i + 1, "val/loss": v, "val/acc": 1 - v} for i, v in enumerate(losses)]


def named(runs) -> list[str]:
    return [run.folder.name for run in runs]


# --- finding and reading run folders ------------------------------------------------------------------------


def test_find_walks_sweeps_and_ensemble_members_and_skips_what_a_run_holds(tmp_path):
    sweep = tmp_path / "train" / "multirun" / "2026-01-01" / "10-00-00"
    for name in ("10", "2", "0"):
        make_run(sweep, name, metrics=done(0.5))
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    ensemble = make_run(tmp_path / "ensemble", "E", job="ensemble", metrics=done(0.4))
    for name in ("0", "1"):
        member = make_run(ensemble / "members", name, metrics=done(0.5))
        for inside in ("tensorboard", "checkpoints", ".hydra/x"):  # a run's own folders hold no runs
            make_run(member / inside, "fake")
    (tmp_path / "notes").mkdir()
    found = listing.find(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "ensemble/E", "ensemble/E/members/0", "ensemble/E/members/1",
        *(f"train/multirun/2026-01-01/10-00-00/{n}" for n in ("0", "2", "10"))]
    assert [run.kind for run in listing.collect(tmp_path)] == ["ensemble"] + ["train"] * 5


def test_collect_leaves_out_the_folders_of_commands_that_report_on_runs(tmp_path):
    make_run(tmp_path, "train", metrics=done(0.5))
    make_run(tmp_path, "report", job="runs", files={"groups.md": "x\n"})
    make_run(tmp_path, "doctor", job="doctor", files={"doctor.json": "{}"})
    assert named(listing.collect(tmp_path)) == ["train"]


STATUSES = {  # name: (make_run arguments, status, words of the reason)
    "done": (dict(metrics=done(0.5, 0.9)), "done", ""),
    "pruned": (dict(metrics=done(0.5, 0.9, pruned=True)), "pruned", ""),
    "failed": (dict(files={"error.txt": "the training loss became nan\n at epoch 2\n"}, age=9999), "failed",
               "the training loss became nan at epoch 2"),
    "interrupted.txt": (dict(files={"interrupted.txt": "killed\n"}), "interrupted", "killed"),
    "corrupt": (dict(metrics="{not json"), "corrupt", "not valid JSON"),
    "not metrics": (dict(metrics='{"test/acc": "high"}'), "corrupt", "test/acc"),
    "fresh log": (dict(files={"train.log": "[...][INFO] - epoch 1\n"}), "running", ""),
    "no log, fresh": (dict(), "running", ""),
    "log error": (dict(files={"train.log": ERROR_LINE.format("first") + ERROR_LINE.format("the last error")}),
                  "failed", "the last error"),
    "old log": (dict(files={"train.log": "[...][INFO] - epoch 1\n"}, age=3600), "interrupted", "stopped"),
    "ended sweep": (dict(files={"train.log": "[...][INFO] - epoch 1\n"}, ended=True), "failed", "no metrics.json"),
}


@pytest.mark.parametrize("case", STATUSES)
def test_read_gives_each_status_with_its_reason(tmp_path, case):
    kwargs, status, reason = STATUSES[case]
    folder = make_run(tmp_path, "r", **{k: v for k, v in kwargs.items() if k != "ended"})
    run = listing.read(folder, ended=kwargs.get("ended", False))  # ended: the sweep is over, nothing runs
    assert run.status == status, (case, run)
    assert reason in run.reason and (reason or not run.reason), (case, run.reason)


# --- where, sort, the table ------------------------------------------------------------------------------------


@pytest.fixture
def three(tmp_path) -> list:
    """a: sgd with optimizer.lr=1e-2 typed; b: an mlp at the default lr; c: a changed default lr 0.01, no override."""
    make_run(tmp_path, "a", ["optimizer=sgd", "optimizer.lr=1e-2", "trainer.max_epochs=3"], done(0.5, 0.8),
             choices={"optimizer": "sgd"}, config={**CONFIG, "optimizer": {"lr": 0.01}}, age=300)
    make_run(tmp_path, "b", ["model=mlp", "trainer.max_epochs=3"], done(0.2, 0.9), choices={"model": "mlp"}, age=100)
    make_run(tmp_path, "c", ["trainer.max_epochs=3"], done(0.3, 0.7), config={**CONFIG, "optimizer": {"lr": 0.01}},
             age=200)
    return listing.collect(tmp_path)


@pytest.mark.parametrize("where, expected", [
    ("model=cnn", ["a", "c"]),  # a group's option, from hydra.yaml
    ("model=cnn optimizer=adam", ["c"]),  # every condition holds
    ("optimizer.lr=0.01", ["a", "c"]),  # a config key; 1e-2 typed == 0.01
    ("optimizer.lr=1e-2", ["a", "c"]),
    ("model.depth=3", ["a", "b", "c"]),
    ("test/acc=0.9", ["b"]),  # a metric
    ("status=done", ["a", "b", "c"]),
])
def test_where_matches_groups_config_keys_metrics_and_numbers(three, where, expected):
    assert named(listing.select(three, where)) == expected


def test_where_with_a_key_no_run_has_says_did_you_mean(three):
    with pytest.raises(UserError, match=r"no run has the key optimiser \(did you mean optimizer\?\)"):
        listing.select(three, "optimiser=adam")
    with pytest.raises(UserError, match="not KEY=VALUE"):
        listing.select(three, "cnn")


def test_order_is_newest_first_or_best_first_by_a_metric(three, tmp_path):
    assert named(listing.order(three, None)) == ["b", "c", "a"]
    assert named(listing.order(three, "test/acc")) == ["b", "a", "c"]  # higher is better
    assert named(listing.order(three, "test/loss")) == ["b", "c", "a"]  # lower is better
    assert named(listing.order(three, "wall_time_s")) == named(three)  # ties keep the order
    maxed = [make_run(tmp_path / "max", n, metrics={**done(v), "mode": "max"}) for n, v in (("x", 0.6), ("y", 0.9))]
    assert named(listing.order([listing.read(m) for m in maxed], "objective")) == ["y", "x"]  # mode max
    failed = listing.read(make_run(tmp_path, "f", files={"error.txt": "x"}))
    assert named(listing.order([failed, *three], "test/acc"))[-1] == "f"  # without the metric: last
    with pytest.raises(UserError, match=r"sort=test/accuracy is not a metric.*did you mean test/acc"):
        listing.order(three, "test/accuracy")


def test_overrides_every_run_shares_are_shown_once(three, tmp_path):
    common, table = listing.rows(three, tmp_path)
    assert common == ["trainer.max_epochs=3"]
    assert [row["overrides"] for row in table] == ["optimizer=sgd optimizer.lr=1e-2", "model=mlp", ""]
    text = listing.render(three, tmp_path, "table")
    assert text.splitlines()[0] == f"3 runs in {tmp_path}; all with trainer.max_epochs=3"
    assert text.count("trainer.max_epochs=3") == 1
    assert listing.shared([["a=1", "b=2"]]) == []  # one run: nothing is shared


def test_render_in_each_format(three, tmp_path):
    make_run(tmp_path, "bad", ["trainer.max_epochs=3"], metrics="{not json")  # corrupt: listed, never a crash
    runs = listing.order(listing.collect(tmp_path), "test/acc")
    rows = list(csv.DictReader(io.StringIO(listing.render(runs, tmp_path, "csv"))))
    assert [(r["run"], r["status"]) for r in rows] == [("b", "done"), ("a", "done"), ("c", "done"), ("bad", "corrupt")]
    assert float(rows[0]["test/acc"]) == 0.9 and rows[0]["overrides"] == "model=mlp" and rows[0]["kind"] == "train"
    assert "not valid JSON" in rows[-1]["note"] and rows[-1]["objective"] == ""
    data = json.loads(listing.render(runs, tmp_path, "json"))
    assert [Path(d["run"]).name for d in data] == ["b", "a", "c", "bad"]
    assert data[0]["metrics"]["test/acc"] == 0.9 and data[0]["overrides"] == ["model=mlp", "trainer.max_epochs=3"]
    md = listing.render(runs, tmp_path, "md").splitlines()
    assert md[2].startswith("| run | time | kind | status | overrides | objective | test/acc |")
    assert len(md) == 2 + 2 + 4 and md[4].startswith("| b | ")
    table = listing.render(runs, tmp_path, "table").splitlines()
    assert table[2].split()[:4] == ["run", "time", "kind", "status"]
    assert [line.split()[0] for line in table[3:] if not line.startswith(" ")] == ["b", "a", "c", "bad"]
    assert "..." not in "\n".join(table)  # the corrupt run's long note wraps onto the lines below its row


DRAWN = ["optimizer=momentum", "optimizer.lr=0.004311710058685493", "data.batch_size=64",
         "regularization.weight_decay=0.0036905577292137633", "regularization.dropout=0.48183138025051464",
         "model.depth=2", "model.activation=relu"]
SEARCH = ["search=random", "search.n_trials=3", "trainer.max_epochs=1", "trainer.limit_train_batches=2"]


def search_trials(root, drawn=(DRAWN, [*DRAWN[:-1], "model.activation=silu"])) -> Path:
    """A search folder as dlopt's search leaves it: multirun.yaml with the command line, one run per trial with the
    given overrides, the drawn values, the study's name and the trial's number."""
    folder = Path(root) / "train" / "search" / "study"
    for n, values in enumerate(drawn):
        make_run(folder, str(n), [*SEARCH, *values, "search.study_name=study", f"search.trial={n}"], done(0.3 + n))
    (folder / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"hydra": [], "task": SEARCH}},
                                                          "search": {"study_name": "study"}}))
    return folder


def test_a_search_trial_shows_its_drawn_values_first_and_whole(tmp_path):
    """BUG: the terminal table cut each cell at 60 characters, after the overrides every trial shares; the drawn
    values, the only part that differs, were hidden."""
    folder = search_trials(tmp_path)
    make_run(tmp_path, "plain", ["trainer.max_epochs=1"], done(0.9))
    runs = listing.order(listing.collect(tmp_path), "objective")
    assert runs[0].shown() == [*DRAWN, *SEARCH]  # drawn first; the study's name and the trial's number name it
    common, table = listing.rows(runs, tmp_path)
    assert common == ["trainer.max_epochs=1"] and table[0]["overrides"].startswith("optimizer=momentum "
                                                                                 "optimizer.lr=0.004312 ")
    text = listing.render(runs, tmp_path, "table")
    assert "..." not in text and "search.trial" not in text and "search.study_name" not in text
    words = text.split()
    for value in [*listing.rounded(DRAWN).split(), *SEARCH[:2], "model.activation=silu"]:
        assert value in words, (value, text)  # every drawn value whole, on one of its row's lines
    trials = listing.rows(listing.collect(folder), folder)[1]  # the search alone: only what its trials differ in
    assert [row["overrides"] for row in trials] == ["model.activation=relu", "model.activation=silu"]


def doctor_tries(root) -> Path:
    """A folder of `dlopt doctor try=true`: its remedy/ config group and the sweep of +remedy=original,r1,r2."""
    folder = Path(root) / "doctor" / "D"
    (folder / "remedy").mkdir(parents=True)
    header = "# @package _global_\n"
    (folder / "remedy" / "original.yaml").write_text(header + "model:\n  activation: sigmoid\n")
    (folder / "remedy" / "r1.yaml").write_text(header + "model:\n  activation: leaky_relu\n")
    (folder / "remedy" / "r2.yaml").write_text(header + "defaults:\n- override /optimizer: sgd\n- _self_\nmodel:\n"
                                               "  activation: sigmoid\n  norm: batch\noptimizer:\n  lr: 0.05\n")
    for n, option in enumerate(("original", "r1", "r2")):
        make_run(folder, str(n), [f"+remedy={option}", "model=mlp", "seed=0"], done(0.5 - n / 10),
                 choices={"remedy": option}, config_dirs=[folder])
    return folder


def test_a_doctor_try_run_shows_what_its_remedy_changes(tmp_path):
    folder = doctor_tries(tmp_path)
    runs = listing.collect(folder)
    common, table = listing.rows(runs, folder)
    assert common == ["model=mlp", "seed=0"]
    assert {row["run"]: row["overrides"] for row in table} == {
        "0": "original", "1": "model.activation=leaky_relu", "2": "optimizer=sgd model.norm=batch optimizer.lr=0.05"}
    shutil.rmtree(folder / "remedy")  # its files gone (the folder was moved and the sweep's copy removed)
    assert [listing.read(folder / n).shown()[0] for n in "012"] == ["original", "+remedy=r1", "+remedy=r2"]


def test_a_runs_resumes_are_its_note(tmp_path):
    resumes = [{"from_epoch": 18, "overrides": ["optimizer=sgd", "resume_changes=true"], "time": "2026-01-01 10:00",
                "changed": {"optimizer._target_": {"from": "torch.optim.Adam", "to": "torch.optim.SGD"}}},
               {"from_epoch": 31, "overrides": [], "changed": {}, "time": "2026-01-01 11:00"}]
    make_run(tmp_path, "resumed", metrics=done(0.3, epochs=40), files={"resumes.json": json.dumps(resumes)})
    # trained 3 epochs, resumed with more, killed: its metrics.json is not of what it holds now
    make_run(tmp_path, "extending", metrics=done(0.35), age=9999,
             files={"resumes.json": json.dumps([{**resumes[1], "from_epoch": 4}])})
    make_run(tmp_path, "corrupt", metrics=done(0.4), files={"resumes.json": '[{"from_epoch": 3, '})
    make_run(tmp_path, "wrong", metrics=done(0.5), files={"resumes.json": '[{"epoch": 3}]'})
    make_run(tmp_path, "failed", files={"error.txt": "the loss became nan\n", "resumes.json": json.dumps(resumes[1:])},
             age=9999)
    runs = listing.order(listing.collect(tmp_path), "objective")
    notes = {row["run"]: row["note"] for row in listing.rows(runs, tmp_path)[1]}
    assert notes["resumed"] == "resumed from epoch 18: optimizer=sgd resume_changes=true; resumed from epoch 31"
    assert notes["corrupt"].startswith("resumes.json is not valid JSON (")
    assert notes["wrong"].startswith("resumes.json is not a list of dlopt's resume records")
    assert notes["failed"] == "the loss became nan; resumed from epoch 31"
    assert notes["extending"].startswith("resumed from epoch 4, not finished since: its metrics.json is of epoch 3")
    assert {run.folder.name: run.status for run in runs} == {"resumed": "done", "corrupt": "done", "wrong": "done",
                                                             "failed": "failed", "extending": "interrupted"}
    resumed = [run for run in runs if run.folder.name == "resumed"]  # adam, then sgd: where= finds it by either
    for where in ("optimizer=sgd", "optimizer=adam", "optimizer._target_=torch.optim.Adam", "model.depth=3"):
        assert named(listing.select(resumed, where)) == ["resumed"], where
    assert listing.select(resumed, "optimizer=rmsprop") == []
    data = {Path(d["run"]).name: d for d in json.loads(listing.render(runs, tmp_path, "json"))}
    assert data["resumed"]["resumes"] == resumes and data["corrupt"]["resumes"] == []
    assert data["corrupt"]["note"].startswith("resumes.json is not valid JSON")
    assert "resumed from epoch 18: optimizer=sgd" in listing.render(runs, tmp_path, "table")


# --- groups: mean ± sd and Welch's t-test ---------------------------------------------------------------------


@pytest.fixture
def by_optimizer(tmp_path) -> list:
    values = {"adam": [0.30, 0.32, 0.31], "sgd": [0.50, 0.52, 0.49], "rmsprop": [0.29, 0.40, 0.36],
              "momentum": [0.45]}
    for optimizer, objectives in values.items():
        for seed, objective in enumerate(objectives):
            make_run(tmp_path, f"{optimizer}{seed}", [f"optimizer={optimizer}", f"seed={seed}"],
                     done(objective, 1 - objective), choices={"optimizer": optimizer})
    make_run(tmp_path, "sgd-pruned", ["optimizer=sgd"], done(0.01, 0.99, pruned=True))  # would be best if counted
    make_run(tmp_path, "sgd-failed", ["optimizer=sgd"], files={"error.txt": "the loss became nan\n"})
    return listing.collect(tmp_path)


def test_groups_test_each_against_the_best_with_welch(by_optimizer):
    found = groups.aggregate(by_optimizer, ["optimizer"], "objective")
    assert [g.values for g in found] == [("adam",), ("rmsprop",), ("momentum",), ("sgd",)]
    best, rmsprop, momentum, sgd = found
    assert best.best and best.p is None
    assert sgd.p == pytest.approx(ttest_ind([0.30, 0.32, 0.31], [0.50, 0.52, 0.49], equal_var=False).pvalue)
    assert rmsprop.p == pytest.approx(ttest_ind([0.30, 0.32, 0.31], [0.29, 0.40, 0.36], equal_var=False).pvalue)
    assert sgd.p < 0.05 < rmsprop.p
    assert sgd.p < 0.001 and groups.verdict(sgd, "objective") == "worse (p<0.001)"
    assert groups.verdict(rmsprop, "objective") == f"within noise (p={rmsprop.p:.2g})"
    assert groups.verdict(momentum, "objective") == "no test (n < 2)"
    assert groups.verdict(best, "objective") == "best"
    with pytest.raises(UserError, match=r"by=optimiser: no run has the key optimiser \(did you mean optimizer\?\)"):
        groups.aggregate(by_optimizer, ["optimiser"], "objective")


def test_groups_count_only_finished_runs_and_say_n_of_m(by_optimizer):
    found = groups.aggregate(by_optimizer, ["optimizer"], "objective")
    columns, rows = groups.table(found, ["optimizer"], "objective")
    assert columns == ["optimizer", "n", "objective", "test/acc", "test/loss", "test/ece", "vs best"]
    row = {r["optimizer"]: r for r in rows}
    assert [row[o]["n"] for o in ("adam", "sgd", "momentum")] == ["3", "3 of 5", "1"]
    sd = statistics.stdev([0.50, 0.52, 0.49])  # 0.0153; adam's 0.01 is the column's smallest: 3 decimal places
    assert row["sgd"]["objective"] == f"{statistics.fmean([0.50, 0.52, 0.49]):.3f} ± {sd:.3f}"  # pruned not counted
    assert row["momentum"]["objective"] == "0.450"
    text = groups.report(found, ["optimizer"], "objective")
    assert "Welch's t-test of objective" in text and "| sgd | 3 of 5 |" in text
    assert groups.welch([0.5, 0.5], [0.5, 0.5]) == 1.0
    assert groups.welch([0.5, 0.5], [0.7, 0.7]) == 0.0
    assert groups.welch([0.5], [0.7, 0.8]) is None


def test_by_a_number_groups_the_runs_of_one_value_however_it_was_typed(tmp_path):
    """BUG (groups.py, aggregate): groups are keyed by the text of the value, so optimizer.lr=1e-2 typed in one
    sweep and 0.01 in another make two groups of the same learning rate; where= calls them equal."""
    for name, lr in (("a0", "1e-2"), ("a1", "1e-2"), ("b0", "0.01"), ("b1", "0.01")):
        make_run(tmp_path, name, [f"optimizer.lr={lr}"], done(0.3 + len(name) / 100))
    runs = listing.collect(tmp_path)
    assert len(listing.select(runs, "optimizer.lr=0.01")) == 4
    found = groups.aggregate(runs, ["optimizer.lr"], "objective")
    assert [len(g.runs) for g in found] == [4], [(g.values, len(g.runs)) for g in found]


def test_group_table_tells_small_values_apart(tmp_path):
    """BUG (listing.cell, used by groups.report): a knob's value from the config is a float printed to 4 decimals,
    so weight decays 1e-5 and 1e-6 are both '0.0000' in the group table."""
    for name, decay, objective in (("x", 1e-5, 0.3), ("y", 1e-6, 0.4)):
        make_run(tmp_path, name, metrics=done(objective), config={**CONFIG, "weight_decay": decay})
    runs = listing.collect(tmp_path)
    lines = groups.report(groups.aggregate(runs, ["weight_decay"], "objective"), ["weight_decay"], "objective")
    labels = [line.split("|")[1].strip() for line in lines.splitlines()[-2:]]
    assert len(set(labels)) == 2, labels


def grouped(root, by, metric="objective"):
    """(the groups of the runs under root by `by`, the report's lines)."""
    found = groups.aggregate(listing.collect(root), by, metric)
    return found, groups.report(found, by, metric).splitlines()


def test_by_one_factor_of_a_factorial_sweep_with_one_seed_gives_no_verdict(tmp_path):
    """Issue 24: optimizer x regularization with one seed, by=optimizer: n=2 per group whose spread is the
    regularization's effect; Welch would call sgd worse (p=0.022 in the issue). No verdict, the reason, by=[...]."""
    values = {("adam", "none"): 0.30, ("adam", "strong"): 0.31, ("sgd", "none"): 0.50, ("sgd", "strong"): 0.52}
    for (optimizer, regularization), objective in values.items():
        make_run(tmp_path, f"{optimizer}-{regularization}", [f"optimizer={optimizer}",
                                                             f"regularization={regularization}", "seed=0"],
                 done(objective, 1 - objective), choices={"optimizer": optimizer, "regularization": regularization})
    assert groups.welch([0.30, 0.31], [0.50, 0.52]) < 0.05  # what the old report called "worse"
    found, lines = grouped(tmp_path, ["optimizer"])
    assert [(g.values, g.mixed, g.p) for g in found] == [(("adam",), ["regularization"], None),
                                                        (("sgd",), ["regularization"], None)]
    assert lines[1] == ("not replicates: in groups adam, sgd the runs differ in regularization, not only in the seed: "
                        "the spread is not seed noise, so they get no verdict; group by every key that varies: "
                        "by=[optimizer,regularization]")
    table = "\n".join(lines[2:])
    assert "worse" not in table and "within noise" not in table and "p=" not in table
    assert [groups.verdict(g, "objective") for g in found] == ["best mean; not replicates (regularization differs)",
                                                               "not replicates (regularization differs)"]
    found, lines = grouped(tmp_path, ["optimizer", "regularization"])  # as the note says: like with like
    assert [g.mixed for g in found] == [[]] * 4 and "not replicates" not in "\n".join(lines)


def test_seeds_and_what_only_names_a_run_leave_runs_replicates(tmp_path):
    for n, objective in enumerate((0.30, 0.31, 0.32)):  # another seed, split seed, trial number and study name
        make_run(tmp_path, f"a{n}", ["optimizer=adam", f"seed={n}", f"data.split_seed={n}", f"search.trial={n}",
                                     f"search.study_name=s{n}"], done(objective))
        make_run(tmp_path, f"s{n}", ["optimizer=sgd", f"seed={n}", f"data.split_seed={n}", f"search.trial={n}",
                                     f"search.study_name=s{n}"], done(objective + 0.2), choices={"optimizer": "sgd"})
    found, lines = grouped(tmp_path, ["optimizer"])
    assert [g.mixed for g in found] == [[], []] and found[1].p < 0.05
    assert groups.verdict(found[1], "objective") == "worse (p<0.001)" and len(lines) == 1 + 1 + 2 + 2


def test_a_searchs_drawn_values_and_a_resumes_overrides_make_runs_differ(tmp_path):
    for n, lr in enumerate(("0.0012", "0.031")):  # two trials of a search that drew the same optimizer
        make_run(tmp_path / "search", str(n), ["search=random", "optimizer=adam", f"optimizer.lr={lr}",
                                               f"search.trial={n}"], done(0.3 + n / 100))
    found, _ = grouped(tmp_path / "search", ["optimizer"])
    assert found[0].mixed == ["optimizer.lr"]
    for n in range(2):
        make_run(tmp_path / "resumed", str(n), ["model=mlp", f"seed={n}"], done(0.3 + n / 100, epochs=30),
                 choices={"model": "mlp"})
    resume = [{"from_epoch": 18, "overrides": ["optimizer=sgd", "resume_changes=true"], "time": "2026-01-01 10:00",
               "changed": {"optimizer._target_": {"from": "torch.optim.Adam", "to": "torch.optim.SGD"}}}]
    (tmp_path / "resumed" / "1" / "resumes.json").write_text(json.dumps(resume))
    found, _ = grouped(tmp_path / "resumed", ["model"])
    assert found[0].mixed == ["optimizer"]  # adam throughout, against adam then sgd; resume_changes is no setting
    found, lines = grouped(tmp_path / "resumed", ["optimizer"])  # grouped as it started: adam
    assert [(g.values, g.mixed) for g in found] == [(("adam",), ["optimizer"])]
    assert lines[1].endswith("no verdict; a resume changed optimizer (the runs' notes in dlopt runs say which)")


def test_a_mixed_group_that_is_not_the_best_leaves_the_others_tested(tmp_path):
    runs = {"adam": [("0.001", 0.30), ("0.001", 0.31), ("0.001", 0.32)], "sgd": [("0.1", 0.50), ("0.1", 0.52),
                                                                                ("0.1", 0.49)],
            "rmsprop": [("0.001", 0.40), ("0.01", 0.45)]}
    for optimizer, values in runs.items():
        for seed, (lr, objective) in enumerate(values):
            make_run(tmp_path, f"{optimizer}{seed}", [f"optimizer={optimizer}", f"optimizer.lr={lr}", f"seed={seed}"],
                     done(objective), choices={"optimizer": optimizer})
    found, lines = grouped(tmp_path, ["optimizer"])
    verdicts = {g.values[0]: groups.verdict(g, "objective") for g in found}
    assert verdicts == {"adam": "best", "rmsprop": "not replicates (optimizer.lr differs)",
                        "sgd": "worse (p<0.001)"}, verdicts
    assert lines[1].startswith("not replicates: in group rmsprop the runs differ in optimizer.lr") \
        and "(nor do" not in lines[1] and lines[1].endswith("by=[optimizer,optimizer.lr]")


def test_a_key_with_one_value_per_group_is_shown_beside_by_and_tested_with_it(tmp_path):
    for seed in range(3):  # each optimizer at its own learning rate: the comparison is of the pairs
        make_run(tmp_path, f"adam{seed}", ["optimizer=adam", "optimizer.lr=0.001", f"seed={seed}"],
                 done(0.30 + seed / 100))
        make_run(tmp_path, f"sgd{seed}", ["optimizer=sgd", "optimizer.lr=0.1", f"seed={seed}"],
                 done(0.50 + seed / 100), choices={"optimizer": "sgd"})
    found, lines = grouped(tmp_path, ["optimizer"])
    columns, rows = groups.table(found, ["optimizer"], "objective")
    assert columns[:3] == ["optimizer", "optimizer.lr", "n"]
    assert [(r["optimizer"], r["optimizer.lr"], r["vs best"]) for r in rows] == [("adam", "0.001", "best"),
                                                                                 ("sgd", "0.1", "worse (p<0.001)")]
    assert lines[1] == ("the groups also differ in optimizer.lr (one value each, shown): a difference between groups "
                        "is that of optimizer, optimizer.lr together; by=[optimizer,optimizer.lr] says so")


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy, on group c's equal values
def test_group_numbers_read_alike(tmp_path):
    """BUG (groups.table through listing.cell): 4 decimals for some numbers and 4 significant digits for others
    ('0.2458 ± 0.0006703'), an sd of 0 as '0.0000'. Now mean and sd share their decimal places, those of the
    column's smallest sd to 2 significant digits."""
    values = {"a": [0.2450, 0.2461], "b": [0.1512, 0.1976], "c": [0.36, 0.36], "d": [0.41]}
    for group, objectives in values.items():
        for seed, objective in enumerate(objectives):
            make_run(tmp_path, f"{group}{seed}", [f"model.name={group}", f"seed={seed}"], done(objective))
    found, _ = grouped(tmp_path, ["model.name"])
    _, rows = groups.table(found, ["model.name"], "objective")
    cells = {r["model.name"]: r["objective"] for r in rows}
    assert cells == {"b": "0.17440 ± 0.03281", "a": "0.24555 ± 0.00078", "c": "0.36000 ± 0.00000", "d": "0.41000"}
    assert groups.places([(2.2263, None), (0.5, None)]) == 4  # without an sd: the smallest mean to 4 digits
    assert [groups._p(p) for p in (0.42, 0.022, 0.0012, 0.00015)] == ["p=0.42", "p=0.022", "p=0.0012", "p<0.001"]


# --- compare ----------------------------------------------------------------------------------------------------


def test_compare_shows_a_changed_default_and_an_absent_key(tmp_path):
    a = make_run(tmp_path, "a", ["seed=0"], done(0.3, 0.9), config={**CONFIG, "mixup": 0.2}, history=curve(0.5, 0.3))
    b = make_run(tmp_path, "b", ["seed=0"], done(0.4, 0.8), choices={"optimizer": "sgd"},
                 config={**CONFIG, "optimizer": {"lr": 0.05}})  # the same overrides, another default lr
    runs = compare.open_runs([str(a), str(b)])
    diff = compare.differences(runs)
    assert diff["optimizer.lr"] == [0.001, 0.05] and diff["optimizer"] == ["adam", "sgd"]
    assert diff["mixup"] == [0.2, compare.ABSENT]
    assert "seed" not in diff and "trainer.max_epochs" not in diff and "model.depth" not in diff
    text = compare.report(runs)
    assert "| optimizer.lr | 0.0010 | 0.0500 |" in text and "| mixup | 0.2000 | (absent) |" in text
    assert "| test/acc | 0.9000 | 0.8000 |" in text
    assert compare.plot(runs, tmp_path / "compare.png") == [str(b)]  # b has no history.json
    assert (tmp_path / "compare.png").stat().st_size > 0


def test_compare_report_tells_small_values_apart(tmp_path):
    """BUG (compare._shown, through listing.cell): a float key that differs is printed to 4 decimals, so learning
    rates 1e-5 and 3e-5 both show as 0.0000 in the 'config keys that differ' table."""
    a = make_run(tmp_path, "a", metrics=done(0.3), config={**CONFIG, "optimizer": {"lr": 1e-5}})
    b = make_run(tmp_path, "b", metrics=done(0.4), config={**CONFIG, "optimizer": {"lr": 3e-5}})
    [line] = [line for line in compare.report(compare.open_runs([a, b])).splitlines() if "optimizer.lr" in line]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] != cells[2], line


def test_compare_lists_each_runs_resumes_and_their_changes(tmp_path):
    resumes = [{"from_epoch": 18, "overrides": ["optimizer=sgd", "resume_changes=true"], "time": "2026-01-01 10:00",
                "changed": {"optimizer._target_": {"from": "torch.optim.Adam", "to": "torch.optim.SGD"},
                            "optimizer.momentum": {"to": 0.9}}},
               {"from_epoch": 25, "overrides": ["trainer.max_epochs=40"], "time": "2026-01-01 11:00",
                "changed": {"trainer.max_epochs": {"from": 3, "to": 40}}}]
    a = make_run(tmp_path, "a", metrics=done(0.3), config={**CONFIG, "optimizer": {"_target_": "torch.optim.Adam",
                                                                                   "lr": 0.001}},
                 files={"resumes.json": json.dumps(resumes)})
    b = make_run(tmp_path, "b", metrics=done(0.4), config={**CONFIG, "optimizer": {"_target_": "torch.optim.Adam",
                                                                                   "lr": 0.001}})
    runs = compare.open_runs([a, b])
    text = compare.report(runs)
    assert ("- a: resumed from epoch 18: optimizer=sgd resume_changes=true; changed optimizer._target_ "
            "torch.optim.Adam -> torch.optim.SGD, optimizer.momentum (absent) -> 0.9000; at 2026-01-01 10:00") in text
    assert ("- a: resumed from epoch 25: trainer.max_epochs=40; changed trainer.max_epochs 3 -> 40; at "
            "2026-01-01 11:00") in text
    assert "| trainer.max_epochs | 40 | 3 |" in text  # the config as the last resume trained it
    assert json.loads(compare.as_json(runs))["runs"][0]["resumes"] == resumes
    (a / "resumes.json").write_text("{cut")
    runs = compare.open_runs([a, b])
    [line] = [line for line in compare.report(runs).splitlines() if "resumes.json" in line]
    assert line.startswith("- a: resumes.json is not valid JSON (") and line.endswith("(its resumes are not known)")
    assert "| trainer.max_epochs |" not in compare.report(runs)  # the config as started: both 3
    assert "resumes_error" in json.loads(compare.as_json(runs))["runs"][0]


# --- the command, end to end, on folders written by hand ---------------------------------------------------------


@pytest.fixture(scope="module")
def hand(tmp_path_factory) -> Path:
    """sweep/0-1: sgd (cnn), sweep/2-3: adam (cnn, mlp), sweep/4: adam failed; an empty folder, a folder that is not
    a run."""
    root = tmp_path_factory.mktemp("hand")
    for n, (optimizer, model, objective, acc) in enumerate([("sgd", "cnn", 0.50, 0.80), ("sgd", "cnn", 0.52, 0.78),
                                                            ("adam", "cnn", 0.30, 0.90), ("adam", "mlp", 0.32, 0.88)]):
        make_run(root / "sweep", str(n), [f"optimizer={optimizer}", f"model={model}", f"seed={n % 2}",
                                          "trainer.max_epochs=3"], done(objective, acc),
                 choices={"optimizer": optimizer, "model": model}, history=curve(objective + 0.2, objective))
    make_run(root / "sweep", "4", ["optimizer=adam", "model=cnn", "seed=2", "trainer.max_epochs=3"],
             choices={"optimizer": "adam"}, files={"error.txt": "the training loss became nan\n"})
    (root / "empty").mkdir()
    (root / "notrun").mkdir()
    (root / "notrun" / "notes.txt").write_text("not a run\n")
    return root


def listed(result) -> list[str]:
    return [Path(d["run"]).name for d in json.loads(result.stdout)]


def test_a_listing_prints_every_run_and_writes_nothing(cli, hand, tmp_path):
    result = cli.ok("runs", f"path={hand}/sweep", cwd=tmp_path)
    lines = result.stdout.splitlines()
    assert lines[0] == f"5 runs in {hand}/sweep; all with trainer.max_epochs=3", result.describe()
    assert lines[2].split()[:4] == ["run", "time", "kind", "status"]
    assert sorted(line.split()[0] for line in lines[3:]) == ["0", "1", "2", "3", "4"]
    [failed] = [line for line in lines if line.startswith("4 ")]
    assert "failed" in failed and "the training loss became nan" in failed
    assert not (tmp_path / "outputs").exists(), sorted(map(str, (tmp_path / "outputs").rglob("*")))


@pytest.mark.parametrize("form", ["json", "csv"])
def test_json_and_csv_on_stdout_parse(cli, hand, tmp_path, form):
    result = cli.ok("runs", f"path={hand}/sweep", f"format={form}", cwd=tmp_path)
    if form == "json":
        data = json.loads(result.stdout)  # nothing else on stdout
        assert sorted(Path(d["run"]).name for d in data) == ["0", "1", "2", "3", "4"]
        assert {d["status"] for d in data} == {"done", "failed"}
    else:
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
        assert sorted(r["run"] for r in rows) == ["0", "1", "2", "3", "4"]
        assert {r["run"]: r["test/acc"] for r in rows}["2"] == "0.9"
    assert not (tmp_path / "outputs").exists()


def test_where_as_one_argument_with_sort_and_limit(cli, hand, tmp_path):
    result = cli.ok("runs", f"path={hand}/sweep", "where=model=cnn", "sort=test/acc", "limit=2", "format=json",
                    cwd=tmp_path)
    assert listed(result) == ["2", "0"]  # the mlp run 3 (acc 0.88) is filtered out, best first, two of them
    result = cli.ok("runs", f"path={hand}/sweep", "where=model=cnn optimizer=sgd", "format=json", cwd=tmp_path)
    assert sorted(listed(result)) == ["0", "1"]


def test_by_writes_groups_and_the_axis_plot_and_prints_the_table(cli, hand, tmp_path):
    """The adam runs of `hand` are a cnn and an mlp: not replicates, so by=optimizer gives no verdict and says why;
    by=[optimizer,model] compares like with like (but one run each: no test)."""
    result = cli.ok("runs", f"path={hand}/sweep", "by=optimizer", cwd=tmp_path)
    [folder] = (tmp_path / "outputs" / "runs").glob("*/*")
    assert {p.name for p in folder.iterdir()} >= {"groups.md", "groups.json", "axes.png"}
    rows = {row["optimizer"]: row for row in json.loads((folder / "groups.json").read_text())}
    assert rows["adam"]["n"] == "2 of 3" and rows["sgd"]["n"] == "2"
    assert rows["adam"]["vs best"] == "best mean; not replicates (model differs)" and rows["adam"]["not_replicates"] \
        == ["model"]
    assert rows["sgd"]["vs best"] == "no test (the best group is not replicates)" and rows["sgd"]["p"] is None
    assert "| sgd | 2 |" in (folder / "groups.md").read_text()
    lines = result.stdout.splitlines()
    assert lines[1].startswith("not replicates: in group adam the runs differ in model") and \
        lines[1].endswith("group by every key that varies: by=[optimizer,model]"), result.describe()
    table = [line.split() for line in lines]
    assert ["optimizer", "n", "objective"] == table[3][:3], result.describe()
    assert table[4][:4] == ["adam", "2", "of", "3"] and table[5][:2] == ["sgd", "2"]
    result = cli.ok("runs", f"path={hand}/sweep", "by=optimizer", "format=json", cwd=tmp_path)
    assert [row["optimizer"] for row in json.loads(result.stdout)] == ["adam", "sgd"]
    result = cli.ok("runs", f"path={hand}/sweep", "by=[optimizer,model]", "format=json", cwd=tmp_path)
    assert [(r["optimizer"], r["model"], r["vs best"]) for r in json.loads(result.stdout)] == [
        ("adam", "cnn", "best"), ("adam", "mlp", "no test (n < 2)"), ("sgd", "cnn", "no test (n < 2)")]


def test_compare_writes_compare_md_and_png(cli, hand, tmp_path):
    result = cli.ok("runs", f"compare=[{hand}/sweep/0,{hand}/sweep/2]", cwd=tmp_path)
    [folder] = (tmp_path / "outputs" / "runs").glob("*/*")
    assert "| optimizer | sgd | adam |" in result.stdout, result.describe()
    assert (folder / "compare.md").read_text().startswith("compared: 0 (done), 2 (done)")
    assert (folder / "compare.png").stat().st_size > 0
    as_json = json.loads(cli.ok("runs", f"compare=[{hand}/sweep/0,{hand}/sweep/2]", "format=json", cwd=tmp_path).stdout)
    assert as_json["differences"]["optimizer"] == ["sgd", "adam"] and len(as_json["runs"]) == 2


BAD = {  # arguments: words of the one line
    "no runs": (("path={hand}/empty",), ("holds no runs",)),
    "no path": (("path={hand}/nope",), ("does not exist",)),
    "where key": (("path={hand}/sweep", "where=optimiser=adam"), ("optimiser", "did you mean optimizer")),
    "where none": (("path={hand}/sweep", "where=model=rnn"), ("none of the runs",)),
    "by key": (("path={hand}/sweep", "by=optimiser"), ("optimiser", "did you mean optimizer")),
    "sort": (("path={hand}/sweep", "sort=accuracy"), ("sort=accuracy is not a metric",)),
    "compare one": (("compare=[{hand}/sweep/0]",), ("at least two",)),
    "compare not a run": (("compare=[{hand}/sweep/0,{hand}/notrun]",), ("notrun is not a run folder",)),
    "format": (("path={hand}/sweep", "format=xml"), ("format=xml",)),
    "limit": (("path={hand}/sweep", "limit=0"), ("limit=0",)),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(in_process, hand, tmp_path, case):
    args, needles = BAD[case]
    before = sorted(hand.rglob("*"))
    result = in_process.run("runs", *(a.format(hand=hand) for a in args), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.output, result.describe()
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), (needles, result.describe())
    assert not (tmp_path / "outputs").exists() and sorted(hand.rglob("*")) == before


def test_listing_imports_no_torch(cli, hand, tmp_path):
    result, imported = cli.imported("runs", f"path={hand}/sweep", cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    assert not imported & {"torch", "lightning", "numpy"}, sorted(imported & {"torch", "lightning", "numpy"})


def test_a_thousand_runs_are_listed(cli, tmp_path):
    hydra = "hydra:\n  job:\n    name: train\n  runtime:\n    choices:\n      model: cnn\n"
    for n in range(1000):
        folder = tmp_path / "many" / str(n) / ".hydra"
        folder.mkdir(parents=True)
        (folder / "overrides.yaml").write_text(f"- seed={n}\n")
        (folder / "config.yaml").write_text(f"seed: {n}\n")
        (folder / "hydra.yaml").write_text(hydra)
        (folder.parent / "metrics.json").write_text(json.dumps(done(n / 1000, 1 - n / 1000)))
    result = cli.ok("runs", "path=many", "format=csv", "sort=objective", cwd=tmp_path)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 1000 and rows[0]["run"] == "0" and rows[-1]["run"] == "999"


# --- a real sweep -------------------------------------------------------------------------------------------------


def trained_sweep(cli, cwd: Path, *sweeps: str) -> tuple[Path, Path]:
    """(cwd, its sweep folder): dlopt train -m SWEEPS, each run tiny."""
    cli.ok("train", "-m", *sweeps, *cli.TINY, cwd=cwd, timeout=600)
    [folder] = cli.sweep_dirs(cwd)
    return cwd, folder


@pytest.fixture(scope="module")
def sweep(cli, tmp_path_factory) -> tuple[Path, Path]:
    """(cwd, its sweep folder): dlopt train -m seed=0,1 optimizer=sgd,adam."""
    return trained_sweep(cli, tmp_path_factory.mktemp("sweep"), "seed=0,1", "optimizer=sgd,adam")


def test_a_real_sweep_grouped_by_optimizer(cli, sweep):
    cwd, folder = sweep
    result = cli.ok("runs", f"path={folder.relative_to(cwd)}", "by=optimizer", cwd=cwd)
    [out] = (cwd / "outputs" / "runs").glob("*/*")
    rows = {row["optimizer"]: row["n"] for row in json.loads((out / "groups.json").read_text())}
    assert rows == {"sgd": "2", "adam": "2"}, result.describe()
    assert "sgd" in result.stdout and "adam" in result.stdout
    verdicts = [row["vs best"] for row in json.loads((out / "groups.json").read_text())]  # replicates: tested
    assert verdicts[0] == "best" and verdicts[1].startswith(("worse (p", "within noise (p")), result.describe()
    assert "not replicates" not in result.stdout
    listing_all = cli.ok("runs", "format=json", cwd=cwd)  # path=outputs: the report folder above is not a run
    assert sorted(listed(listing_all)) == ["0", "1", "2", "3"], listing_all.describe()


def test_a_real_sweep_compared(cli, sweep, tmp_path):
    _, folder = sweep
    by = {o: run for run in sorted(folder.glob("[0-9]")) for o in listing.read(run).overrides}
    result = cli.ok("runs", f"compare=[{by['optimizer=sgd']},{by['optimizer=adam']}]", cwd=tmp_path)
    [line] = [line for line in result.stdout.splitlines() if line.startswith("| optimizer |")]
    assert line.split("|")[2].strip() != line.split("|")[3].strip(), line
    assert {line.split("|")[2].strip(), line.split("|")[3].strip()} == {"sgd", "adam"}
    assert "| optimizer.lr |" in result.stdout and "no history.json" not in result.output
    [out] = (tmp_path / "outputs" / "runs").glob("*/*")
    assert (out / "compare.png").stat().st_size > 0


def test_the_sweep_summary_lists_the_same_runs(cli, sweep, tmp_path):
    _, folder = sweep
    summary = (folder / "summary.md").read_text().splitlines()
    table = [line.split("|")[1:4] for line in summary if line.startswith("| ") and not line.startswith("| run ")]
    assert sorted(cell[0].strip() for cell in table) == ["0", "1", "2", "3"], summary
    assert {cell[2].strip() for cell in table} == {"done"}
    data = json.loads(cli.ok("runs", f"path={folder}", "format=json", cwd=tmp_path).stdout)
    assert sorted(Path(d["run"]).name for d in data) == ["0", "1", "2", "3"]
    assert {d["status"] for d in data} == {"done"}


@pytest.fixture(scope="module")
def factorial(cli, tmp_path_factory) -> tuple[Path, Path]:
    """(cwd, its sweep folder): dlopt train -m optimizer=sgd,adam regularization=none,strong, one seed (issue 24)."""
    return trained_sweep(cli, tmp_path_factory.mktemp("factorial"), "optimizer=sgd,adam", "regularization=none,strong")


def test_a_real_factorial_sweep_with_one_seed_grouped_by_one_factor_gets_no_verdict(cli, factorial, tmp_path):
    _, folder = factorial
    result = cli.ok("runs", f"path={folder}", "by=optimizer", cwd=tmp_path)
    [out] = (tmp_path / "outputs" / "runs").glob("*/*")
    rows = json.loads((out / "groups.json").read_text())
    assert [(row["n"], row["not_replicates"], row["p"]) for row in rows] == [("2", ["regularization"], None)] * 2
    assert all("not replicates (regularization differs)" in row["vs best"] for row in rows)
    lines = result.stdout.splitlines()
    assert lines[1].startswith("not replicates: in groups ") and lines[1].endswith(
        "by=[optimizer,regularization]"), result.describe()
    table = "\n".join(lines[2:])
    assert not any(word in table for word in ("worse", "within noise", "p=")), result.describe()
    assert "regularization differs" in (out / "groups.md").read_text()
    result = cli.ok("runs", f"path={folder}", "by=[optimizer,regularization]", "format=json", cwd=tmp_path)
    rows = json.loads(result.stdout)
    assert len(rows) == 4 and all(row["not_replicates"] == [] for row in rows)
    assert [row["vs best"] for row in rows] == ["best"] + ["no test (n < 2)"] * 3


def test_a_real_search_lists_its_drawn_values_whole(cli, tmp_path):
    cli.ok("train", "search=random", "search.n_trials=2", *cli.TINY, cwd=tmp_path, timeout=600)
    [folder] = (tmp_path / "outputs" / "train" / "search").glob("*")
    given = set(yaml.safe_load((folder / "multirun.yaml").read_text())["hydra"]["overrides"]["task"])
    result = cli.ok("runs", cwd=tmp_path)
    assert "..." not in result.stdout and "search.trial" not in result.stdout, result.describe()
    words = result.stdout.split()
    for trial in sorted(p for p in folder.iterdir() if (p / ".hydra").is_dir()):
        overrides = listing.read(trial).overrides
        drawn = [o for o in overrides if o not in given and not o.startswith("search.")]
        assert len(drawn) == 7, overrides  # conf/search/random.yaml's space
        assert all(value in words for value in listing.rounded(drawn).split()), (drawn, result.describe())
        [row] = [line for line in result.stdout.splitlines() if line.startswith(f"{trial.relative_to(tmp_path)} ")
                 or line.startswith(f"{trial.relative_to(tmp_path / 'outputs')} ")]
        assert row.split()[5] == listing.rounded(drawn[:1]), row  # the drawn values first


def test_a_real_doctor_try_run_is_listed_with_its_remedy(cli, tmp_path):
    run = cli.train(cwd=tmp_path)
    cli.ok("doctor", f"run={run}", "try=true", "remedies=1", cwd=tmp_path, timeout=600)
    [folder] = (tmp_path / "outputs" / "doctor").glob("*/*")
    report = next(p for p in (folder / "doctor.json", run / "doctor.json") if p.is_file())  # doctor's report
    [tried] = json.loads(report.read_text())["tried"]
    result = cli.ok("runs", f"path={folder}", "format=csv", cwd=tmp_path)
    shown = {row["run"]: row["overrides"] for row in csv.DictReader(io.StringIO(result.stdout))}
    assert "+remedy" not in result.stdout and shown["0"] == "original", result.describe()
    remedy = dict(o.split("=", 1) for o in tried["remedy"].split())
    assert dict(o.split("=", 1) for o in shown["1"].split()).keys() == remedy.keys(), (shown, tried)
    assert all(listing.same(listing.read(folder / "1").value(k)[1], v) for k, v in remedy.items())
    assert all(listing.same(v, remedy[k]) for k, v in (o.split("=", 1) for o in shown["1"].split())), shown
    summary = (folder / "summary.md").read_text()  # the sweep's summary shows them alike
    assert "+remedy" not in summary and "| original |" in summary and f"| {shown['1']} |" in summary, summary


def test_a_real_runs_resumes_are_listed_and_compared(cli, tmp_path):
    """A run of 1 epoch resumed for a second with SGD (dlopt train resume= writes resumes.json), beside one that was
    never resumed; then its resumes.json damaged."""
    resumed, other = cli.train(cwd=tmp_path), cli.train("seed=1", cwd=tmp_path)
    cli.ok("train", f"resume={resumed}", "trainer.max_epochs=2", "optimizer=sgd", "resume_changes=true", cwd=tmp_path)
    [record] = json.loads((resumed / "resumes.json").read_text())
    assert record["from_epoch"] == 2 and record["changed"]["trainer.max_epochs"] == {"from": 1, "to": 2}, record
    result = cli.ok("runs", "format=csv", cwd=tmp_path)
    notes = {Path(row["run"]).name: row["note"] for row in csv.DictReader(io.StringIO(result.stdout))}
    assert notes == {resumed.name: "resumed from epoch 2: trainer.max_epochs=2 optimizer=sgd resume_changes=true",
                     other.name: ""}, result.describe()
    assert listed(cli.ok("runs", "where=optimizer=sgd", "format=json", cwd=tmp_path)) == [resumed.name]
    result = cli.ok("runs", f"compare=[{resumed},{other}]", cwd=tmp_path)
    [line] = [line for line in result.stdout.splitlines() if line.startswith(f"- {resumed.name}: ")]
    assert line.startswith(f"- {resumed.name}: resumed from epoch 2: trainer.max_epochs=2 optimizer=sgd "
                           "resume_changes=true; changed ") and "trainer.max_epochs 1 -> 2" in line, line
    assert "optimizer._target_ torch.optim.Adam -> torch.optim.SGD" in line and f"; at {record['time']}" in line
    assert "| trainer.max_epochs | 2 | 1 |" in result.stdout, result.describe()  # as it last trained
    assert "| optimizer | sgd | adam |" in result.stdout and "| optimizer._target_ | torch.optim.SGD |" in result.stdout
    (resumed / "resumes.json").write_text('[{"from_epoch": 2,')  # cut short
    result = cli.ok("runs", cwd=tmp_path)
    assert "resumes.json is not valid JSON" in result.stdout, result.describe()
    result = cli.ok("runs", f"compare=[{resumed},{other}]", cwd=tmp_path)
    assert len([line for line in result.output.splitlines() if "resumes.json" in line]) == 1, result.describe()
