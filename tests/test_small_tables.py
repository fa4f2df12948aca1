"""Small tables: an epoch of at least data.min_batches batches, and K-fold cross-validation (data.cv=K).

Real trainings on scikit-learn's bundled wine table (178 rows, 3 classes) written to CSV, through the real `dlopt`
command; the batching and the folds are also checked directly on the data module and the split function.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import pytest
import torch
import yaml

from dlopt.data.datamodule import TensorBatches
from dlopt.data.sources import digits, stratified_split
from dlopt.errors import UserError
from test_bad_inputs import assert_fails_clearly

WINE = ("data=csv", "data.target=target", "callbacks.progress_bar=null")


def wine_csv(folder: Path) -> Path:
    from sklearn.datasets import load_wine

    data = load_wine()
    path = folder / "wine.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([name.replace("/", "_") for name in data.feature_names] + ["target"])
        writer.writerows([*map(float, x), int(y)] for x, y in zip(data.data, data.target))
    return path


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return wine_csv(tmp_path_factory.mktemp("table"))


def test_passes_repeat_every_sample_and_keep_one_pass_as_it_was():
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    one = TensorBatches(x, y, batch_size=4, shuffle=True, seed=3)
    one.set_epoch(2)
    # one pass: the order of before data.min_batches existed (a resumed run draws the same batches)
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.cat([b for _, b in one]), expected)
    three = TensorBatches(x, y, batch_size=4, shuffle=True, seed=3, passes=3)
    three.set_epoch(2)
    seen = torch.cat([b for _, b in three])
    assert len(three) == 8 == len(list(three))
    assert torch.equal(torch.bincount(seen), torch.full((10,), 3))  # every sample once per pass
    assert not torch.equal(seen[:10], seen[10:20])  # each pass shuffled anew


def test_min_batches_passes_a_small_split_several_times_and_leaves_digits_alone():
    data = digits(batch_size=64, min_batches=20)
    assert data.train_batching(data.train_count) == (64, 1)  # 1257 samples: 20 batches, the default job unchanged
    small = digits(batch_size=64, min_batches=20, fraction=0.1)
    count = small.train_count
    size, passes = small.train_batching(count)
    assert (size, passes) == (64, 10) and count <= 128  # 2 batches a pass: 10 passes make 20 batches
    assert len(small.train_dataloader()) == 20
    small.full_batch = True  # optimizer=lbfgs
    assert small.train_batching(count) == (count, 1)
    assert len(small.train_dataloader()) == 1


def test_cv_folds_test_every_sample_once_and_validate_on_the_rest():
    x, y = torch.arange(60.0).unsqueeze(1), torch.arange(60) % 3
    tested = []
    for k in range(4):
        x_tr, y_tr, x_va, y_va, x_te, y_te = stratified_split(x, y, 0.15, 0.15, seed=1, cv=f"{k}/4")
        assert len(x_te) == 15 and len(x_va) == 9 and len(x_tr) == 36  # val_fraction of all 60 samples
        assert torch.equal(torch.bincount(y_te), torch.tensor([5, 5, 5]))  # stratified
        parts = [set(t.flatten().tolist()) for t in (x_tr, x_va, x_te)]
        assert not (parts[0] & parts[1]) and not (parts[0] | parts[1]) & parts[2]
        tested += x_te.flatten().tolist()
    assert sorted(tested) == list(range(60))
    with pytest.raises(UserError, match=r"data.cv=25 is more folds than .* smallest class has samples \(20\)"):
        stratified_split(x, y, 0.15, 0.15, seed=1, cv="0/25")


def test_a_small_table_trains_as_many_steps_as_digits_and_hints_cross_validation(cli, table, tmp_path):
    run = cli.train(*WINE, f"data.path={table}", "model=linear", "trainer.max_epochs=3",
                    "trainer.limit_train_batches=null", "trainer.limit_val_batches=null",
                    "trainer.limit_test_batches=null", cwd=tmp_path)
    metrics = cli.metrics(run)
    # 178 rows less 15% validation and 15% test: 124 training rows, 2 batches of 64 a pass, 10 passes an epoch
    assert (metrics["passes_per_epoch"], metrics["batches_per_epoch"], metrics["steps"]) == (10, 20, 60)
    log = (run / "train.log").read_text()
    assert "each epoch passes over them 10 times (20 batches)" in log
    assert "the test split holds 27 samples" in log and "data.cv=5" in log
    once = cli.train(*WINE, f"data.path={table}", "model=linear", "trainer.max_epochs=3", "data.min_batches=1",
                     "trainer.limit_train_batches=null", cwd=tmp_path)
    assert (cli.metrics(once)["batches_per_epoch"], cli.metrics(once)["steps"]) == (2, 6)


@pytest.fixture(scope="module")
def cross_validation(cli, table, tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("cv")
    return cli.train(*WINE, f"data.path={table}", "model=linear", "data.cv=3", "trainer.max_epochs=2",
                     "trainer.limit_train_batches=null", "trainer.limit_val_batches=null",
                     "trainer.limit_test_batches=null", cwd=cwd)


def test_cross_validation_reports_the_folds_mean_and_sd(cli, cross_validation):
    run = cross_validation
    folds = [cli.metrics(run / "folds" / str(k)) for k in range(3)]
    metrics = cli.metrics(run)
    for key in ("test/acc", "test/loss", "val/loss", "objective"):
        values = [f[key] for f in folds]
        assert metrics[key] == pytest.approx(statistics.mean(values))
        assert metrics["cv"]["sd"][key] == pytest.approx(statistics.stdev(values))
    assert metrics["cv"]["folds"] == metrics["cv"]["trained"] == 3
    assert metrics["cv"]["per_fold"]["test/acc"] == [f["test/acc"] for f in folds]
    assert metrics["epochs"] == 2 and metrics["steps"] == sum(f["steps"] for f in folds)
    assert not (run / "checkpoints").exists()  # the folds hold the networks


def test_cross_validation_folds_are_runs_that_test_every_row_once(cli, cross_validation, table):
    tested = 0
    for k in range(3):
        fold = cross_validation / "folds" / str(k)
        assert cli.config(fold)["data"]["cv"] == f"{k}/3"
        assert f"data.cv={k}/3" in yaml.safe_load((fold / ".hydra" / "overrides.yaml").read_text())
        with np.load(fold / "predictions.npz") as arrays:
            tested += len(arrays["test_labels"])
        assert (fold / "checkpoints" / "best.ckpt").is_file()
    assert tested == 178
    log = (cross_validation / "train.log").read_text()
    assert "3-fold cross-validation: val/loss=" in log and "the test split holds" not in log


def test_a_fold_opens_like_any_run(cli, cross_validation, tmp_path):
    fold = cross_validation / "folds" / "1"
    result = cli.ok("eval", f"run={fold}", cwd=tmp_path)
    evaluated = sorted((tmp_path / "outputs" / "eval").glob("*/*/metrics.json"))
    assert len(evaluated) == 1, result.describe()
    assert json.loads(evaluated[0].read_text())["test/acc"] == pytest.approx(cli.metrics(fold)["test/acc"])


def test_cross_validation_in_a_search_and_a_joblib_sweep(cli, table, tmp_path):
    import optuna

    from dlopt.search.study import STORAGE_FILE

    cli.ok("train", "-m", *WINE, f"data.path={table}", "model=linear", "data.cv=2", "trainer.max_epochs=2",
           "search=random", "search.n_trials=2", "search.n_jobs=1", cwd=tmp_path)
    search = next((tmp_path / "outputs" / "train" / "search").glob("*"))
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{search / STORAGE_FILE}")
    trials = sorted(p for p in search.iterdir() if (p / "metrics.json").is_file())
    assert len(trials) == 2
    for trial in trials:
        metrics = cli.metrics(trial)
        assert metrics["cv"]["trained"] == 2
        assert metrics["objective"] == pytest.approx(statistics.mean(metrics["cv"]["per_fold"]["objective"]))
    # the objective the sweeper told the study is the folds' mean
    assert sorted(t.value for t in study.trials) == pytest.approx(sorted(cli.metrics(t)["objective"] for t in trials))
    cli.ok("train", "-m", *WINE, f"data.path={table}", "model=linear", "data.cv=2", "trainer.max_epochs=1",
           "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", cwd=tmp_path)
    sweep = cli.sweep_dirs(tmp_path)[0]
    for job in ("0", "1"):
        assert cli.metrics(sweep / job)["cv"]["trained"] == 2
        assert (sweep / job / "folds" / "1" / "metrics.json").is_file()


@pytest.mark.parametrize("overrides, needle", [
    (("data.cv=1",), "data.cv=1 is not valid"),
    (("data.cv=5", "data.fold=0/5"), "data.cv=5 with data.fold=0/5"),
    (("data.cv=5", "data.bootstrap=true"), "data.cv=5 with data.bootstrap=true"),
    (("data.cv=80",), "data.cv=80 is more folds than"),
    (("data.min_batches=0",), "data.min_batches=0 is not valid"),
    (("optimizer=lbfgs", "trainer.accumulate_grad_batches=2"), "trainer.accumulate_grad_batches=2"),
    (("optimizer=lbfgs", "augmentation=mixup"), "augmentation.mixup_alpha"),
    (("optimizer=lbfgs", "trainer.precision=16-mixed"), "trainer.precision=16-mixed"),
])
def test_bad_inputs_get_one_line_and_leave_nothing(in_process, table, tmp_path, overrides, needle):
    result = in_process.run("train", *in_process.TINY, *WINE, f"data.path={table}", "model=linear", *overrides,
                            cwd=tmp_path)
    assert result.returncode == 2, result.describe()
    assert_fails_clearly(result, tmp_path, needle)


def test_doctor_of_a_cross_validation_reads_its_folds(cli, cross_validation, tmp_path):
    result = cli.ok("doctor", f"run={cross_validation}", cwd=tmp_path)
    lines = [line for line in result.stdout.splitlines() if "data.cv=" in line]
    assert [line.split(":")[0] for line in lines] == ["0", "1", "2"], result.describe()
    assert f"3 runs in {cross_validation}" in result.stdout


class PrunesAtFirstEpoch(L.Callback):
    """A search trial's pruning as dlopt.search.pruning.Pruning marks it (a `trial`, `pruned` and `stopped`): it
    records the epochs it saw and stops the run after the first."""

    trial = "a trial"

    def __init__(self):
        self.seen, self.stopped = [], None

    @property
    def pruned(self) -> bool:
        return self.stopped is not None

    def on_validation_end(self, trainer, module) -> None:
        self.seen.append(trainer.current_epoch)
        self.stopped = (trainer.current_epoch, "pruned")
        trainer.should_stop = True


def test_a_search_trial_prunes_on_fold_0_and_ends_the_cross_validation(tmp_path):
    from test_training import TINY, composed

    from dlopt.training.crossval import cross_validate

    pruning = PrunesAtFirstEpoch()
    cfg = composed(*TINY, "model=linear", "data=synthetic", "data.cv=3", "trainer.max_epochs=3")
    objective = cross_validate(cfg, tmp_path, callbacks=[pruning])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert pruning.seen == [0]  # fold 0 alone reports, and its first epoch ends the trial
    assert metrics["pruned"] and metrics["cv"]["trained"] == 1 and metrics["objective"] == objective
    assert not (tmp_path / "folds" / "1").exists()
