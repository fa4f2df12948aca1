"""`dlopt runs` on K-fold cross-validations (data.cv=K): one run each, its metrics as `mean ± sd` over its folds, one
replicate in by= and compare= (dlopt/runs/listing.py, groups.py, compare.py).

Unit tests read cross-validation folders written by hand in the shape dlopt.training.crossval.summary writes; the
end-to-end tests run the real `dlopt` on one tiny sweep of two cross-validations (seed=0,1, data.cv=3).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
import time
from pathlib import Path

import pytest
from scipy.stats import ttest_ind

from dlopt.runs import compare, groups, listing
from test_runs import curve, done, make_run, named

# --- hand-written cross-validations ------------------------------------------------------------------------------


def cv_metrics(objectives, accs, folds=None, **extra) -> dict:
    """metrics.json of a cross-validation whose folds had these objectives and test accuracies (as
    dlopt.training.crossval.summary writes it: means at the top, sample sds in cv.sd, the epochs the folds share)."""
    trained, k_folds = len(objectives), folds or len(objectives)
    sd = {"objective": statistics.stdev(objectives), "test/acc": statistics.stdev(accs), "test/loss":
          statistics.stdev(objectives), "epochs": 0.0, "wall_time_s": 0.0} if trained > 1 else {}
    mean = statistics.fmean(objectives)
    return {**done(mean, statistics.fmean(accs), epochs=3, wall_time_s=1.5 * trained), "test/loss": mean,
            "cv": {"folds": k_folds, "trained": trained, "sd": sd, "runs": f"folds/0..{k_folds - 1}",
                   "per_fold": {"objective": list(objectives), "test/acc": list(accs)}}, **extra}


def make_cv(root, name, overrides, objectives, accs, choices=None, histories=None, age=None, folds=None,
            **extra) -> Path:
    """A cross-validation folder: its metrics.json and RUN/folds/k for each trained fold, each a run of its own
    (data.cv=k/K); `age` seconds old."""
    k_folds = folds or len(objectives)
    run = make_run(root, name, [*overrides, f"data.cv={k_folds}"], cv_metrics(objectives, accs, folds, **extra),
                   choices=choices)
    for k, (objective, acc) in enumerate(zip(objectives, accs)):
        make_run(run / "folds", str(k), [*overrides, f"data.cv={k}/{k_folds}"], done(objective, acc),
                 choices=choices, history=histories[k] if histories else None)
    if age is not None:
        for path in [*run.rglob("*"), run]:
            os.utime(path, (time.time() - age,) * 2)
    return run


def test_spread_keeps_the_columns_number_format():
    assert listing.spread(0.96049, 0.025411) == "0.9605 ± 0.0254"
    assert listing.spread(1.2e-5, 3.1e-6) == "1.2e-05 ± 3.1e-06"  # 4 significant digits, as cell() gives 1.2e-05
    assert listing.spread(2, 0.0) == "2"  # a count every fold agrees on: one number
    assert listing.spread(1.0, 0.0) == "1.0000 ± 0.0000"  # a metric the folds agree on still says it is a spread
    assert listing.spread(0.5, None) == "0.5000"
    metrics = cv_metrics([0.3, 0.4], [0.9, 0.8])  # folds of equal wall time: its sd is 0, but the time is a total
    assert listing.fold_sd(metrics, "wall_time_s") is None and listing.shown_metric(metrics, "wall_time_s") == 3.0
    assert listing.shown_metric(metrics, "test/acc") == f"0.8500 ± {statistics.stdev([0.9, 0.8]):.4f}"


def test_a_cross_validation_is_one_row_with_mean_and_sd_in_each_format(tmp_path):
    make_cv(tmp_path, "cv", ["model=linear"], [0.30, 0.34, 0.35], [0.90, 0.95, 0.97], age=60)
    make_run(tmp_path, "plain", ["model=linear"], done(0.40, 0.88), age=120)
    runs = listing.collect(tmp_path)
    assert named(runs) == ["cv", "plain"]  # the folds are not runs of this listing
    table = listing.render(runs, tmp_path, "table").splitlines()
    [row] = [line for line in table if line.startswith("cv ")]
    acc = f"{statistics.fmean([0.90, 0.95, 0.97]):.4f} ± {statistics.stdev([0.90, 0.95, 0.97]):.4f}"
    assert acc in row and f"{statistics.fmean([0.30, 0.34, 0.35]):.4f} ± " in row, row
    assert row.endswith("3-fold cross-validation"), row
    [plain] = [line for line in table if line.startswith("plain ")]
    assert "±" not in plain and "cross-validation" not in plain
    epochs = table[2].index("epochs")
    assert row[epochs:].split()[0] == "3", row  # the folds' shared epochs: one number
    md = listing.render(runs, tmp_path, "md")
    assert f"| {acc} |" in md and "| 3-fold cross-validation |" in md
    rows = list(csv.DictReader(io.StringIO(listing.render(runs, tmp_path, "csv"))))
    header = listing.render(runs, tmp_path, "csv").splitlines()[0].split(",")
    assert header[header.index("test/acc") + 1] == "test/acc sd" and header[header.index("objective") + 1] == \
        "objective sd"
    by_name = {r["run"]: r for r in rows}
    assert float(by_name["cv"]["test/acc"]) == pytest.approx(statistics.fmean([0.90, 0.95, 0.97]))
    assert float(by_name["cv"]["test/acc sd"]) == pytest.approx(statistics.stdev([0.90, 0.95, 0.97]))
    assert by_name["plain"]["test/acc sd"] == "" and by_name["plain"]["test/acc"] == "0.88"
    assert by_name["cv"]["note"] == "3-fold cross-validation" and by_name["plain"]["note"] == ""
    data = json.loads(listing.render(runs, tmp_path, "json"))
    assert data[0]["metrics"]["cv"]["sd"]["test/acc"] == pytest.approx(statistics.stdev([0.90, 0.95, 0.97]))
    assert named(listing.collect(tmp_path / "cv" / "folds")) == ["0", "1", "2"]


def test_runs_without_a_cross_validation_keep_their_columns(tmp_path):
    make_run(tmp_path, "a", ["seed=0"], done(0.3, 0.9))
    make_run(tmp_path, "b", ["seed=1"], done(0.4, 0.8, cv="not a record"))  # not dlopt's cv entry: a plain run
    runs = listing.collect(tmp_path)
    header = listing.render(runs, tmp_path, "csv").splitlines()[0]
    assert " sd" not in header and "±" not in listing.render(runs, tmp_path, "table")
    assert listing.cv_note({"cv": {"folds": "five"}}) == "" and listing.fold_sd({"cv": [], "x": 1.0}, "x") is None


def test_a_pruned_cross_validation_says_how_many_folds_trained(tmp_path):
    make_cv(tmp_path, "one", [], [0.3], [0.9], folds=5, pruned=True)
    make_cv(tmp_path, "two", [], [0.3, 0.5], [0.9, 0.8], folds=5, pruned=True)
    runs = {run.folder.name: run for run in listing.collect(tmp_path)}
    assert runs["one"].status == "pruned" and runs["two"].status == "pruned"
    notes = {r["run"]: r["note"] for r in csv.DictReader(io.StringIO(listing.render(list(runs.values()), tmp_path,
                                                                                     "csv")))}
    assert notes == {"one": "5-fold cross-validation, 1 of 5 folds trained (its numbers are fold 0's alone)",
                     "two": "5-fold cross-validation, 2 of 5 folds trained (its numbers are their mean)"}
    text = listing.render([runs["one"]], tmp_path, "table")
    assert "±" not in text  # one fold: no spread to show


def test_by_counts_a_cross_validation_as_one_replicate_by_its_mean(tmp_path):
    """Three cross-validations per optimizer (seeds 0-2) whose folds spread widely: n is 3 (not 9), the group's sd
    and Welch's test are those of the three means, never of the folds."""
    folds = {"adam": [[0.30, 0.10, 0.50], [0.31, 0.11, 0.52], [0.29, 0.12, 0.49]],
             "sgd": [[0.40, 0.20, 0.60], [0.42, 0.19, 0.61], [0.41, 0.22, 0.58]]}
    for optimizer, per_seed in folds.items():
        for seed, objectives in enumerate(per_seed):
            make_cv(tmp_path, f"{optimizer}{seed}", [f"optimizer={optimizer}", f"seed={seed}"], objectives,
                    [1 - o for o in objectives], choices={"optimizer": optimizer})
    runs = listing.collect(tmp_path)
    assert len(runs) == 6
    found = groups.aggregate(runs, ["optimizer"], "objective")
    means = {o: [statistics.fmean(f) for f in per_seed] for o, per_seed in folds.items()}
    assert [g.values for g in found] == [("adam",), ("sgd",)] and [g.mixed for g in found] == [[], []]
    assert found[0].numbers("objective") == pytest.approx(means["adam"])
    assert found[1].p == pytest.approx(ttest_ind(means["adam"], means["sgd"], equal_var=False).pvalue)
    fold_p = ttest_ind(sum(folds["adam"], []), sum(folds["sgd"], []), equal_var=False).pvalue
    assert fold_p > 0.05 > found[1].p  # the folds as replicates would have called the gap noise
    columns, rows = groups.table(found, ["optimizer"], "objective")
    assert [r["n"] for r in rows] == ["3", "3"]
    mean, sd = statistics.fmean(means["sgd"]), statistics.stdev(means["sgd"])
    decimals = groups.places([(None, statistics.stdev(means["adam"])), (None, sd)])
    assert rows[1]["objective"] == f"{mean:.{decimals}f} ± {sd:.{decimals}f}"
    assert rows[1]["vs best"] == f"worse ({groups._p(found[1].p)})"
    lines = groups.report(found, ["optimizer"], "objective").splitlines()
    assert lines[1] == ("cross-validations: each counts as one run, by its folds' mean (folds share training samples: "
                        "they are not replicates)")


def test_a_group_of_one_cross_validation_gives_its_fold_spread_and_no_test(tmp_path):
    make_cv(tmp_path, "adam", ["optimizer=adam"], [0.30, 0.32, 0.37], [0.9, 0.9, 0.8])
    make_cv(tmp_path, "sgd", ["optimizer=sgd"], [0.50, 0.52, 0.51], [0.8, 0.8, 0.7], choices={"optimizer": "sgd"})
    found = groups.aggregate(listing.collect(tmp_path), ["optimizer"], "objective")
    assert [groups.verdict(g, "objective") for g in found] == ["best", "no test (n < 2)"]
    lines = groups.report(found, ["optimizer"], "objective").splitlines()
    adam, sgd = statistics.stdev([0.30, 0.32, 0.37]), statistics.stdev([0.50, 0.52, 0.51])
    assert lines[1].endswith(f"groups of one cross-validation each, so no test (n < 2), with the sd of objective "
                             f"over their folds: optimizer=adam {adam:.2g} over 3 folds, optimizer=sgd {sgd:.2g} "
                             "over 3 folds"), lines[1]
    _, rows = groups.table(found, ["optimizer"], "objective")
    assert "±" not in rows[0]["objective"]  # the table's ± is between runs: one run has none


def test_folds_grouped_as_runs_are_not_replicates(tmp_path):
    cv = make_cv(tmp_path, "cv", ["model=linear"], [0.30, 0.32, 0.37], [0.9, 0.9, 0.8])
    found = groups.aggregate(listing.collect(cv / "folds"), ["model"], "objective")
    assert [g.mixed for g in found] == [["data.cv"]] and found[0].p is None
    lines = groups.report(found, ["model"], "objective").splitlines()
    assert "they are folds of a cross-validation" in lines[1] and "by=[" not in lines[1], lines[1]


def test_compare_shows_a_cross_validations_spread_and_its_folds_mean_curve(tmp_path):
    histories = [curve(0.9, 0.5, 0.3), curve(0.7, 0.5), curve(0.8, 0.6, 0.4)]  # fold 1 stopped early
    cv = make_cv(tmp_path, "cv", ["model=linear"], [0.30, 0.50, 0.40], [0.9, 0.8, 0.85], histories=histories)
    plain = make_run(tmp_path, "plain", ["model=linear"], done(0.45, 0.8), history=curve(0.8, 0.45))
    runs = compare.open_runs([cv, plain])
    text = compare.report(runs)
    assert text.splitlines()[0] == "compared: cv (done, 3-fold cross-validation), plain (done)"
    assert f"| test/acc | {statistics.fmean([0.9, 0.8, 0.85]):.4f} ± {statistics.stdev([0.9, 0.8, 0.85]):.4f} | " \
           "0.8000 |" in text, text
    assert "| epochs | 3 | 3 |" in text
    rows = compare.history(runs[0])
    assert [r["epoch"] for r in rows] == [1, 2]  # the epochs every fold reached
    assert [r["val/loss"] for r in rows] == pytest.approx([0.8, statistics.fmean([0.5, 0.5, 0.6])])
    assert compare.plot(runs, tmp_path / "compare.png") == []
    data = json.loads(compare.as_json(runs))
    assert data["runs"][0]["cv"]["folds"] == 3 and "cv" not in data["runs"][1]
    assert data["metrics"]["objective"][0] == pytest.approx(0.4)


# --- the real command ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cv_sweep(cli, tmp_path_factory) -> tuple[Path, Path]:
    """(cwd, its sweep folder): two real 3-fold cross-validations of a linear model on digits, seeds 0 and 1."""
    cwd = tmp_path_factory.mktemp("cv")
    cli.ok("train", "-m", "data=digits", "model=linear", "data.cv=3", "seed=0,1", *cli.TINY, cwd=cwd, timeout=600)
    [folder] = cli.sweep_dirs(cwd)
    return cwd, folder


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def spread(mean: float, sd: float) -> str:
    """`mean ± sd` as the listing's number format writes the mean (4 decimals, or 4 significant digits)."""
    form = ".4g" if mean and not 1e-3 <= abs(mean) < 1000 else ".4f"
    return f"{mean:{form}} ± {sd:{form}}"


def test_a_real_cross_validation_is_listed_once_with_mean_and_sd(cli, cv_sweep, tmp_path):
    cwd, folder = cv_sweep
    runs = {run.name: metrics_of(run) for run in (folder / "0", folder / "1")}
    assert all(m["cv"]["folds"] == 3 and m["cv"]["trained"] == 3 for m in runs.values()), runs
    result = cli.ok("runs", f"path={folder}", cwd=tmp_path)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"2 runs in {folder}; all with "), result.describe()  # the 6 folds are no runs here
    for name, metrics in runs.items():
        [row] = [line for line in lines if line.startswith(f"{name} ")]
        sd = metrics["cv"]["sd"]
        for key in ("objective", "test/acc"):
            assert spread(metrics[key], sd[key]) in row, (key, row)
        assert row.endswith("3-fold cross-validation"), row
    md = cli.ok("runs", f"path={folder}", "format=md", cwd=tmp_path).stdout
    metrics = runs["0"]
    assert f"| {spread(metrics['test/acc'], metrics['cv']['sd']['test/acc'])} |" in md, md
    assert md.count("| 3-fold cross-validation |") == 2
    result = cli.ok("runs", f"path={folder}", "format=csv", cwd=tmp_path)
    rows = {row["run"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    assert sorted(rows) == ["0", "1"], result.describe()
    for name, metrics in runs.items():
        assert float(rows[name]["test/acc"]) == pytest.approx(metrics["test/acc"])
        assert float(rows[name]["test/acc sd"]) == pytest.approx(metrics["cv"]["sd"]["test/acc"])
        assert float(rows[name]["objective sd"]) == pytest.approx(metrics["cv"]["sd"]["objective"])
        assert rows[name]["note"] == "3-fold cross-validation"
    listed = json.loads(cli.ok("runs", "format=json", cwd=cwd).stdout)  # all of outputs/: still two runs
    assert sorted(Path(d["run"]).name for d in listed) == ["0", "1"]
    assert not (tmp_path / "outputs").exists()  # listing writes nothing


def test_a_real_cross_validations_folds_are_listed_from_its_folds_folder(cli, cv_sweep, tmp_path):
    _, folder = cv_sweep
    result = cli.ok("runs", f"path={folder}/0/folds", "format=csv", cwd=tmp_path)
    rows = {row["run"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    assert sorted(rows) == ["0", "1", "2"], result.describe()
    assert {name: row["overrides"] for name, row in rows.items()} == {k: f"data.cv={k}/3" for k in "012"}
    per_fold = metrics_of(folder / "0")["cv"]["per_fold"]["test/acc"]
    assert [float(rows[k]["test/acc"]) for k in "012"] == pytest.approx(per_fold)
    assert "test/acc sd" not in rows["0"] and {row.get("note", "") for row in rows.values()} == {""}
    assert statistics.fmean(per_fold) == pytest.approx(metrics_of(folder / "0")["test/acc"])


def test_a_real_by_counts_each_cross_validation_once(cli, cv_sweep, tmp_path):
    _, folder = cv_sweep
    means = [metrics_of(folder / name)["objective"] for name in ("0", "1")]
    result = cli.ok("runs", f"path={folder}", "by=model", cwd=tmp_path)
    [out] = (tmp_path / "outputs" / "runs").glob("*/*")
    [row] = json.loads((out / "groups.json").read_text())
    assert row["n"] == "2" and row["not_replicates"] == [] and row["vs best"] == "best", result.describe()
    assert sorted(row["runs"]) == [str(folder / "0"), str(folder / "1")]
    mean, sd = row["objective"].split(" ± ")
    assert float(mean) == pytest.approx(statistics.fmean(means), abs=10 ** -len(mean.split(".")[1]))
    assert float(sd) == pytest.approx(statistics.stdev(means), abs=10 ** -len(sd.split(".")[1]))
    assert result.stdout.splitlines()[1].startswith("cross-validations: each counts as one run, by its folds' mean")
    result = cli.ok("runs", f"path={folder}", "by=seed", "format=json", cwd=tmp_path)
    rows = json.loads(result.stdout)
    assert [row["n"] for row in rows] == ["1", "1"] and [row["vs best"] for row in rows] == ["best", "no test (n < 2)"]
    text = cli.ok("runs", f"path={folder}", "by=seed", cwd=tmp_path).stdout
    for name in ("0", "1"):
        sd = metrics_of(folder / name)["cv"]["sd"]["objective"]
        assert f"seed={name} {sd:.2g} over 3 folds" in text.splitlines()[1], text
    result = cli.ok("runs", f"path={folder}/0/folds", "by=model", "format=json", cwd=tmp_path)
    [row] = json.loads(result.stdout)
    assert row["n"] == "3" and row["not_replicates"] == ["data.cv"] and row["p"] is None


def test_a_real_cross_validation_compared(cli, cv_sweep, tmp_path):
    _, folder = cv_sweep
    result = cli.ok("runs", f"compare=[{folder}/0,{folder}/1]", cwd=tmp_path)
    assert result.stdout.splitlines()[0] == ("compared: 0 (done, 3-fold cross-validation), 1 (done, 3-fold "
                                             "cross-validation)"), result.describe()
    metrics = metrics_of(folder / "1")
    assert f"| {spread(metrics['test/acc'], metrics['cv']['sd']['test/acc'])} |" in result.stdout
    assert "no history.json" not in result.output  # the curves are the folds' mean
    [out] = (tmp_path / "outputs" / "runs").glob("*/*")
    assert (out / "compare.png").stat().st_size > 0
    assert math.isfinite(metrics["objective"])
