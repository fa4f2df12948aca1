"""`dlopt ensemble method=bagging|boosting|stacking [train overrides]`: an ensemble whose members it trains itself
(dlopt/ensemble/training.py, boosting.py, stacking.py, build.py) and the data knobs its members use on `dlopt train`
(data.bootstrap, data.sample_weights, data.fold: DataModule.resample).

In-process, without training:
- DataModule.resample on a real digits DataModule (built by dlopt.training.run.build from a Hydra-composed config):
  data.bootstrap draws n samples with replacement, deterministic in the seed and different between seeds, and the
  training loader serves that resample; data.sample_weights never draws a sample of weight 0; data.fold=k/K leaves
  out a stratified fold (the K folds partition the training split); bad values and fold with bootstrap are refused;
- boosting.samme: a perfect member (stop, alpha 1), a member no better than chance (left out: alpha None), the
  weighted error, alpha and weight update of a hand-computed round;
- stacking.predict with a fitted LogisticRegression's parameters is its predict_proba (3 classes, 2 classes, a class
  the held-out samples lacked); meta.npz holds plain arrays.

End to end (module-scoped: each ensemble trains once; digits, model=mlp, one epoch of 5 batches):
- bagging (3 members, seed=7): members/N are ordinary run folders trained with data.bootstrap=True, seed 7+N and
  data.split_seed=7, with their training-split predictions; the ensemble's predictions are the mean of the members';
  ensemble.json's scores, differences to the best and the mean member; metrics.json, summary.md, ensemble.png;
- resuming (copies of the bagging folder, started again with hydra.run.dir=COPY): a member without metrics.json is
  retrained and the others are kept untouched; with every member finished nothing trains (ensemble.combine=vote:
  no NLL); a changed train override is refused in one line;
- boosting (2 members): member 0 on a bootstrap, member 1 on sample_weights/1.npy; each round's weighted error and
  alpha recomputed from the member's training-split predictions; the weights file is SAMME's update; alpha-weighted
  vote;
- stacking with ensemble.folds=2 (2 members): members/N/k with data.fold=k/2, whose held-out folds cover the
  training split; the meta-learner (meta.npz, no pickle) is a LogisticRegression fitted on the out-of-fold
  predictions and predicts the ensemble's val and test probabilities;
- stacking by blending with a list of override sets: each member its own set; the meta-learner fitted on the
  validation split;
- bad inputs of `dlopt ensemble` and of the data knobs on `dlopt train`: exit 2, one line naming the key, no folder.

Two bugs these tests found, fixed: samme kept a member whose weighted error is exactly chance for 3 classes (2/3 is
rounded below 1 - 1/3), and an ensemble whose member override set repeats a key of the shared overrides refused its
own finished members when started again in its folder.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_bad_inputs import assert_fails_clearly
from test_ensemble import PNG_MAGIC, SPLIT_SIZE, SPLITS, files_of, load_npz, one_line, strict_json
from test_training import QUIET, composed

from dlopt.ensemble import boosting, stacking
from dlopt.ensemble.scores import scores
from dlopt.ensemble.selection import combine
from dlopt.errors import UserError

TRAIN_SIZE = 1257  # digits: 1797 samples less 2 x 270 for val and test
CLASSES = 10
# one epoch of 5 batches at lr 0.01: members right on ~80% of the training split (boosting needs better than
# chance and worse than perfect), whole val/test/train splits predicted
COMMON = ("trainer.max_epochs=1", "trainer.limit_train_batches=5", "trainer.limit_val_batches=1",
          "trainer.limit_test_batches=1", "diagnostics=none", *QUIET, "model=mlp", "optimizer.lr=0.01")
BAGGING = ("method=bagging", "ensemble.members=3", "seed=7", *COMMON)
BOOSTING = ("method=boosting", "ensemble.members=2", *COMMON)
FOLDED = ("method=stacking", "ensemble.members=2", "ensemble.folds=2", *COMMON)
# member 1 overrides a key the shared overrides set too (optimizer.lr): its own value wins
BLENDING = ("method=stacking", 'ensemble.members=["model.depth=1","optimizer.lr=0.003"]', *COMMON)


@dataclass
class Trained:
    """A finished `dlopt ensemble method=...`: its arguments, output, folder and files."""

    args: tuple[str, ...]
    output: str
    folder: Path
    summary: dict
    metrics: dict
    arrays: dict[str, np.ndarray]

    def member(self, n: int, k: int | None = None) -> Path:
        return self.folder / "members" / str(n) / ("" if k is None else str(k))


def read_folder(args: tuple[str, ...], output: str, folder: Path) -> Trained:
    return Trained(args, output, folder, strict_json(folder / "ensemble.json"), strict_json(folder / "metrics.json"),
                   load_npz(folder / "predictions.npz"))


def train_ensemble(cli, cwd: Path, *args: str) -> Trained:
    """`dlopt ensemble ARGS` in cwd: exit 0, no traceback, one new outputs/ensemble/DATE/TIME folder holding its
    members (no run under outputs/train)."""
    result = cli.ok("ensemble", *args, cwd=cwd, timeout=900)
    [folder] = cli.run_dirs(cwd, "ensemble")
    assert not (cwd / "outputs" / "train").exists(), "members trained outside the ensemble's folder"
    return read_folder(args, result.output, folder)


def again(cli, folder: Path, args: tuple[str, ...], cwd: Path):
    """The ensemble command started again in `folder` (hydra.run.dir)."""
    cwd.mkdir(exist_ok=True)
    return cli.run("ensemble", *args, f"hydra.run.dir={folder}", cwd=cwd, timeout=900)


def saved_overrides(run: Path) -> dict[str, str]:
    """A run's .hydra/overrides.yaml as key -> value (each key once)."""
    items = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    found = dict(item.partition("=")[::2] for item in items)
    assert len(found) == len(items), items
    return found


def probabilities(run: Path, split: str) -> np.ndarray:
    return load_npz(run / "predictions.npz")[f"{split}_probabilities"].astype(np.float64)


def wrong_on_train(run: Path) -> np.ndarray:
    arrays = load_npz(run / "predictions.npz")
    return arrays["train_probabilities"].argmax(1) != arrays["train_labels"]


def assert_ensemble_files(done: Trained, method: str, members: int, vote: bool = False) -> None:
    """metrics.json (kind ensemble, the scores of ensemble.json), summary.md, ensemble.png, the log's last line."""
    metrics, combined = done.metrics, done.summary["ensemble"]
    assert metrics["kind"] == "ensemble" and metrics["members"] == members, metrics
    assert done.summary["method"] == method
    for split in SPLITS:
        assert metrics[f"{split}/acc"] == pytest.approx(combined[split]["acc"])
        assert metrics[f"{split}/ece"] == pytest.approx(combined[split]["ece"])
        assert 0 <= metrics[f"{split}/acc"] <= 1 and 0 <= metrics[f"{split}/ece"] <= 1, metrics
        if vote:  # a vote's class shares are no probabilities
            assert metrics[f"{split}/loss"] is None and combined[split]["nll"] is None, metrics
        else:
            assert metrics[f"{split}/loss"] == pytest.approx(combined[split]["nll"]) and metrics[f"{split}/loss"] > 0
        labels = done.arrays[f"{split}_labels"]
        p = done.arrays[f"{split}_probabilities"]
        assert p.dtype == np.float32 and p.shape == (SPLIT_SIZE, CLASSES) and labels.shape == (SPLIT_SIZE,)
        np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
        assert combined[split]["acc"] == pytest.approx(float((p.argmax(1) == labels).mean()))
    table = (done.folder / "summary.md").read_text()
    assert "| **ensemble** |" in table and all(f"| {r['name']} |" in table for r in done.summary["members"]), table
    assert (done.folder / "ensemble.png").read_bytes().startswith(PNG_MAGIC)
    assert f"ensemble of {members} of {members} runs ({method})" in (done.folder / "ensemble.log").read_text()


# --- data.bootstrap, data.sample_weights, data.fold: DataModule.resample ----------------------------------------------


@pytest.fixture(scope="module")
def fresh_digits():
    """fresh_digits() -> a new digits DataModule, as `dlopt train model=mlp` builds it (not resampled yet)."""
    from dlopt.training.run import build

    cfg = composed("model=mlp", *QUIET)

    def make():
        data, _ = build(cfg)
        assert data.train_count == TRAIN_SIZE and data.train_index is None and data.fold_index is None
        return data

    return make


def served_labels(data) -> np.ndarray:
    """Every label the training loader serves in one epoch."""
    return np.concatenate([y.numpy() for _, y in data.train_dataloader()])


def test_bootstrap_draws_n_samples_with_replacement_from_the_seed(fresh_digits):
    data = fresh_digits()
    data.resample(3, bootstrap=True)
    index = data.train_index.numpy()
    assert index.shape == (TRAIN_SIZE,) and index.min() >= 0 and index.max() < TRAIN_SIZE
    # with replacement: about 1 - 1/e = 63% of the samples drawn at least once
    assert 0.55 * TRAIN_SIZE < len(np.unique(index)) < 0.7 * TRAIN_SIZE, len(np.unique(index))
    assert data.fold_index is None
    np.testing.assert_array_equal(index, np.random.default_rng(3).choice(TRAIN_SIZE, size=TRAIN_SIZE, replace=True))
    # the training loader serves the resample (with its repeats), the whole split's labels stay the split's
    labels = data.splits["train"][1].numpy()
    np.testing.assert_array_equal(np.sort(served_labels(data)), np.sort(labels[index]))
    assert not np.array_equal(np.bincount(labels[index], minlength=CLASSES), np.bincount(labels, minlength=CLASSES))
    assert len(list(data.split_batches("train"))) == len(list(data.train_dataloader()))  # n draws: as many batches
    # deterministic in the seed, different between seeds
    same, other = fresh_digits(), fresh_digits()
    same.resample(3, bootstrap=True)
    other.resample(4, bootstrap=True)
    np.testing.assert_array_equal(same.train_index.numpy(), index)
    assert (other.train_index.numpy() != index).mean() > 0.9


def test_sample_weights_never_draw_a_sample_of_weight_zero(fresh_digits, tmp_path):
    data = fresh_digits()
    labels = data.splits["train"][1].numpy()
    weights = np.where(labels == 4, 1.0, 0.0)
    weights[np.flatnonzero(labels == 4)[:5]] = 50.0  # five samples of class 4 much more likely than the rest
    np.save(tmp_path / "w.npy", weights)
    data.resample(0, sample_weights=str(tmp_path / "w.npy"))
    index = data.train_index.numpy()
    assert index.shape == (TRAIN_SIZE,) and (weights[index] > 0).all()
    assert set(served_labels(data).tolist()) == {4}  # the loader serves only what was drawn
    heavy = np.isin(index, np.flatnonzero(labels == 4)[:5]).mean()
    assert heavy > 0.5, heavy  # 250 of ~425 weight units: ~59% of the draws
    # the weights are probabilities of the bootstrap: any scale, read as data
    np.save(tmp_path / "scaled.npy", weights * 1e-3)
    scaled = fresh_digits()
    scaled.resample(0, sample_weights=str(tmp_path / "scaled.npy"))
    np.testing.assert_array_equal(scaled.train_index.numpy(), index)


@pytest.mark.parametrize("content, needle", [
    (np.ones(3), "shape (3,)"),
    (-np.ones(TRAIN_SIZE), "finite weights >= 0"),
    (np.zeros(TRAIN_SIZE), "not all 0"),
    (np.full(TRAIN_SIZE, np.nan), "finite weights >= 0"),
    (np.array([{"a": 1}], dtype=object), "not readable as a .npy array"),
    (None, "not readable as a .npy array"),  # no such file
], ids=["shape", "negative", "zeros", "nan", "pickle", "missing"])
def test_bad_sample_weights_are_named(fresh_digits, tmp_path, content, needle):
    path = tmp_path / "w.npy"
    if content is not None:
        np.save(path, content, allow_pickle=True)
    with pytest.raises(UserError, match=f"data.sample_weights={path}") as err:
        fresh_digits().resample(0, sample_weights=str(path))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_folds_partition_the_training_split_stratified(fresh_digits):
    labels = fresh_digits().splits["train"][1].numpy()
    held, trains = [], []
    for k in range(3):
        data = fresh_digits()
        data.resample(0, split_seed=5, fold=f"{k}/3")
        train, out = data.train_index.numpy(), data.fold_index.numpy()
        assert len(np.intersect1d(train, out)) == 0 and len(train) + len(out) == TRAIN_SIZE
        passes = data.train_batching(len(train))[1]  # data.min_batches: 2 passes over the 2/3 of digits left
        np.testing.assert_array_equal(np.sort(served_labels(data)), np.sort(np.tile(labels[train], passes)))  # w/o k
        # stratified: every class in each fold about a third of its samples
        assert (np.abs(np.bincount(labels[out], minlength=CLASSES) - np.bincount(labels) / 3) <= 1).all()
        held.append(out)
        trains.append(train)
    np.testing.assert_array_equal(np.sort(np.concatenate(held)), np.arange(TRAIN_SIZE))
    # from data.split_seed, not the run's seed
    again_ = fresh_digits()
    again_.resample(99, split_seed=5, fold="1/3")
    np.testing.assert_array_equal(again_.fold_index.numpy(), held[1])
    other = fresh_digits()
    other.resample(0, split_seed=6, fold="1/3")
    assert not np.array_equal(other.fold_index.numpy(), held[1])


@pytest.mark.parametrize("fold", ["5/5", "abc", "0/1", "-1/3", "1/"])
def test_a_bad_fold_is_refused(fresh_digits, fold):
    with pytest.raises(UserError, match=f"data.fold={fold} is not valid: expected k/K"):
        fresh_digits().resample(0, fold=fold)


def test_a_fold_with_a_bootstrap_is_refused(fresh_digits, tmp_path):
    with pytest.raises(UserError, match="data.fold=0/2 leaves a fold out.*choose one"):
        fresh_digits().resample(0, fold="0/2", bootstrap=True)
    np.save(tmp_path / "w.npy", np.ones(TRAIN_SIZE))
    with pytest.raises(UserError, match="choose one"):
        fresh_digits().resample(0, fold="0/2", sample_weights=str(tmp_path / "w.npy"))


def test_without_knobs_the_whole_split_trains(fresh_digits):
    data = fresh_digits()
    data.resample(0, split_seed=0)
    assert data.train_index is None and data.fold_index is None
    assert len(served_labels(data)) == TRAIN_SIZE


@pytest.mark.parametrize("case", ["weights", "fold"])
def test_bad_data_knobs_of_train_are_one_line(in_process, tmp_path, case):
    """On the real command: exit 2, one line naming the key, no run folder; nothing trains."""
    if case == "weights":
        np.save(tmp_path / "w.npy", np.ones(10))
        override, needles = f"data.sample_weights={tmp_path / 'w.npy'}", (
            f"data.sample_weights={tmp_path / 'w.npy'} holds", f"it needs {TRAIN_SIZE} finite weights")
    else:
        override, needles = "data.fold=5/5", ("data.fold=5/5 is not valid",)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = in_process.run("train", *COMMON, override, cwd=cwd)
    assert result.returncode == 2, result.describe()
    assert_fails_clearly(result, cwd, *needles)
    assert not list((cwd / "outputs").rglob("*.npz")), result.describe()


# --- boosting.samme, stacking.predict ---------------------------------------------------------------------------------


def test_samme_a_perfect_member_stops_with_alpha_one():
    labels = np.array([0, 1, 2, 1, 0])
    p = np.eye(3)[labels] * 0.7 + 0.1
    weights = np.array([0.1, 0.3, 0.2, 0.2, 0.2])
    found = boosting.samme(weights, p, labels)
    assert found.error == 0 and found.alpha == 1.0 and "every training sample right" in found.stop
    np.testing.assert_array_equal(found.weights, weights)


@pytest.mark.parametrize("labels, predicted", [
    ([0, 1, 0, 1], [0, 0, 1, 1]),  # two classes, half wrong: error 0.5 = 1 - 1/2
    ([0, 1, 2], [1, 2, 0]),  # every sample wrong
    ([0, 1, 2, 0, 1], [1, 2, 0, 0, 0]),  # error 0.8 > 2/3
], ids=["chance of two", "all wrong", "worse than chance"])
def test_samme_a_member_no_better_than_chance_is_left_out(labels, predicted):
    labels, classes = np.array(labels), max(labels) + 1
    weights = boosting.uniform(len(labels))
    found = boosting.samme(weights, np.eye(classes)[predicted], labels)
    assert found.error == pytest.approx(np.mean(np.array(predicted) != labels))
    assert found.alpha is None and "no better than chance" in found.stop
    np.testing.assert_array_equal(found.weights, weights)


def test_samme_a_member_exactly_at_chance_of_three_classes_is_left_out():
    found = boosting.samme(boosting.uniform(3), np.eye(3)[[0, 2, 0]], np.array([0, 1, 2]))
    assert found.alpha is None and found.stop is not None, found


def test_samme_round_by_hand():
    labels = np.array([0, 1, 2, 3])
    predicted = np.array([0, 1, 2, 0])  # the heaviest sample wrong
    weights = np.array([0.2, 0.4, 0.6, 0.8])  # not normalized: err = 0.8 / 2.0
    found = boosting.samme(weights, np.eye(4)[predicted] * 0.9 + 0.025, labels)
    assert found.error == pytest.approx(0.4) and found.stop is None
    assert found.alpha == pytest.approx(np.log(0.6 / 0.4) + np.log(3))  # log 4.5
    np.testing.assert_allclose(found.weights, np.array([0.2, 0.4, 0.6, 0.8 * 4.5]) / 4.8)
    # two classes: AdaBoost's alpha
    two = boosting.samme(boosting.uniform(4), np.eye(2)[[0, 1, 1, 1]], np.array([0, 1, 1, 0]))
    assert two.alpha == pytest.approx(np.log(3)) and two.weights.sum() == pytest.approx(1)
    np.testing.assert_allclose(two.weights, np.array([1, 1, 1, 3]) / 6)


def fitted_logistic(members: list[np.ndarray], labels: np.ndarray, seed: int = 0):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(np.concatenate(members, axis=1), labels)


def parameters_of(model) -> dict[str, np.ndarray]:
    return {"coef": model.coef_, "intercept": model.intercept_, "classes": model.classes_}


@pytest.mark.parametrize("classes", [3, 2])
def test_stacking_predict_is_logistic_regressions_predict_proba(classes, tmp_path):
    rng = np.random.default_rng(classes)
    members = [rng.dirichlet(np.ones(classes), size=80) for _ in range(2)]
    labels = rng.permutation(np.arange(80) % classes)
    model = fitted_logistic(members, labels)
    new = [rng.dirichlet(np.ones(classes), size=30) for _ in range(2)]
    expected = model.predict_proba(np.concatenate(new, axis=1))
    np.testing.assert_allclose(stacking.predict(parameters_of(model), new, classes), expected, atol=1e-12)
    # stacking.fit is that LogisticRegression; its parameters go through meta.npz as plain arrays
    fitted = stacking.fit("logistic", members, labels, seed=0)
    np.testing.assert_allclose(fitted["coef"], model.coef_)
    stacking.save(fitted, tmp_path / "meta.npz")
    with np.load(tmp_path / "meta.npz", allow_pickle=False) as saved:
        assert sorted(saved.files) == ["classes", "coef", "intercept"]
    np.testing.assert_allclose(stacking.predict(stacking.load(tmp_path / "meta.npz"), new, classes), expected,
                               atol=1e-12)


def test_stacking_predict_gives_a_class_the_held_out_samples_lacked_probability_zero():
    rng = np.random.default_rng(0)
    members = [rng.dirichlet(np.ones(3), size=60) for _ in range(2)]
    labels = np.where(np.arange(60) % 2, 2, 0)  # classes 0 and 2 only: a binary LogisticRegression
    model = fitted_logistic(members, labels)
    new = [rng.dirichlet(np.ones(3), size=10) for _ in range(2)]
    found = stacking.predict(parameters_of(model), new, 3)
    assert (found[:, 1] == 0).all()
    np.testing.assert_allclose(found[:, [0, 2]], model.predict_proba(np.concatenate(new, axis=1)), atol=1e-12)


# --- bagging ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bagging(cli, tmp_path_factory) -> Trained:
    return train_ensemble(cli, tmp_path_factory.mktemp("bagging"), *BAGGING)


def test_bagging_members_are_bootstrapped_runs_of_seeds_seed_plus_n_on_one_split(cli, bagging):
    members = bagging.folder / "members"
    assert sorted(p.name for p in members.iterdir() if p.is_dir()) == ["0", "1", "2"]
    for n in range(3):
        run = bagging.member(n)
        saved = saved_overrides(run)
        assert saved["data.bootstrap"] == "True" and saved["seed"] == str(7 + n), saved
        assert saved["data.split_seed"] == "7", saved  # the ensemble's split (seed=7): the same for every member
        assert saved["model"] == "mlp" and saved["trainer.max_epochs"] == "1", saved  # the user's train overrides
        assert not any(k.startswith(("ensemble", "method")) for k in saved), saved  # not the ensemble's own keys
        config = cli.config(run)
        assert config["data"]["bootstrap"] is True and config["seed"] == 7 + n and config["data"]["split_seed"] == 7
        assert config["data"]["sample_weights"] is None and config["data"]["fold"] is None
        metrics = cli.metrics(run)
        cli.assert_finite(metrics)
        assert metrics["seed"] == 7 + n and metrics["epochs"] == 1
        assert (run / "checkpoints" / "best.ckpt").is_file()
        # ensemble.json records each member's overrides
        recorded = dict(o.partition("=")[::2] for o in bagging.summary["overrides"][str(n)])
        assert recorded["seed"] == str(7 + n) and recorded["data.split_seed"] == "7", recorded
    assert [r["run"] for r in bagging.summary["members"]] == [str(bagging.member(n)) for n in range(3)]


def test_bagging_members_saved_their_training_split_predictions(bagging):
    arrays = [load_npz(bagging.member(n) / "predictions.npz") for n in range(3)]
    for found in arrays:
        assert set(found) == {f"{s}_{kind}" for s in ("val", "test", "train") for kind in ("probabilities", "labels")}
        assert found["train_probabilities"].shape == (TRAIN_SIZE, CLASSES)  # the whole split, not the resample
        np.testing.assert_allclose(found["train_probabilities"].sum(1), 1, atol=1e-5)
        for split in ("val", "test", "train"):  # one data split for every seed
            np.testing.assert_array_equal(found[f"{split}_labels"], arrays[0][f"{split}_labels"])
    assert not np.allclose(arrays[0]["train_probabilities"], arrays[1]["train_probabilities"])


def test_bagging_ensemble_is_the_mean_of_its_members(bagging):
    summary = bagging.summary
    assert summary["combine"] == "mean" and [r["weight"] for r in summary["members"]] == [1.0, 1.0, 1.0]
    for split in SPLITS:
        members = [probabilities(bagging.member(n), split) for n in range(3)]
        mean = np.mean(members, axis=0)
        np.testing.assert_allclose(bagging.arrays[f"{split}_probabilities"], mean, atol=1e-6)
        labels = load_npz(bagging.member(0) / "predictions.npz")[f"{split}_labels"]
        np.testing.assert_array_equal(bagging.arrays[f"{split}_labels"], labels)
        assert summary["ensemble"][split] == pytest.approx(scores(mean, labels), abs=1e-7)
        for row, p in zip(summary["members"], members):
            assert row[split] == pytest.approx(scores(p, labels), abs=1e-9)
    assert_ensemble_files(bagging, "bagging", 3)


def test_bagging_differences_to_the_mean_and_the_best_member(bagging):
    summary, rows = bagging.summary, bagging.summary["members"]
    test = summary["ensemble"]["test"]
    for key in ("acc", "nll", "ece"):
        mean_member = np.mean([r["test"][key] for r in rows])
        assert summary["ensemble_minus_mean_member"][key] == pytest.approx(test[key] - mean_member, abs=1e-9)
    best = min(rows, key=lambda r: r["val"]["nll"])
    assert summary["best_member"] == best["name"]
    assert summary["ensemble_minus_best_member"]["nll"] == pytest.approx(test["nll"] - best["test"]["nll"], abs=1e-9)
    assert len(summary["curve"]) == 3 and summary["curve"][-1] == pytest.approx(test)
    assert summary["curve"][0] == pytest.approx(rows[0]["test"])  # member 0 alone


# --- resuming a trained ensemble in its folder ------------------------------------------------------------------------


def copy_of(done: Trained, tmp_path: Path) -> Path:
    folder = tmp_path / "ensemble"
    shutil.copytree(done.folder, folder)  # file times kept
    return folder


def test_resume_retrains_only_the_member_that_did_not_finish(cli, bagging, tmp_path):
    folder = copy_of(bagging, tmp_path)
    (folder / "members" / "1" / "metrics.json").unlink()  # killed before it finished
    (folder / "members" / "1" / "leftover.txt").write_text("from the run that was killed\n")
    kept = {n: files_of(folder / "members" / str(n)) for n in (0, 2)}
    result = again(cli, folder, BAGGING, tmp_path / "cwd")
    assert result.returncode == 0 and "Traceback" not in result.output, result.describe()
    for n in (0, 2):  # untouched: the same files, the same modification times
        assert files_of(folder / "members" / str(n)) == kept[n], n
    retrained = folder / "members" / "1"
    assert not (retrained / "leftover.txt").exists()  # the folder was removed and trained from the start
    assert (retrained / "metrics.json").is_file() and (retrained / "predictions.npz").is_file()
    assert saved_overrides(retrained)["seed"] == "8" and saved_overrides(retrained)["data.bootstrap"] == "True"
    assert "members 0, 2 finished before: kept" in result.output, result.describe()
    assert "training member 1:" in result.output and "training members" not in result.output, result.describe()
    done = read_folder(BAGGING, result.output, folder)
    assert [r["run"] for r in done.summary["members"]] == [str(folder / "members" / str(n)) for n in range(3)]
    mean = np.mean([probabilities(folder / "members" / str(n), "test") for n in range(3)], axis=0)
    np.testing.assert_allclose(done.arrays["test_probabilities"], mean, atol=1e-6)
    assert not (tmp_path / "cwd" / "outputs" / "train").exists()


def test_started_again_with_every_member_finished_nothing_trains(cli, bagging, tmp_path):
    """The same members, combined by a vote this time (ensemble.* keys are the ensemble's, not the members')."""
    folder = copy_of(bagging, tmp_path)
    members = files_of(folder / "members")
    result = again(cli, folder, (*BAGGING, "ensemble.combine=vote"), tmp_path / "cwd")
    assert result.returncode == 0 and "Traceback" not in result.output, result.describe()
    assert files_of(folder / "members") == members
    assert "members 0, 1, 2 finished before: kept" in result.output and "training member" not in result.output
    done = read_folder(BAGGING, result.output, folder)
    assert done.summary["combine"] == "vote"
    assert_ensemble_files(done, "bagging", 3, vote=True)
    assert done.summary["ensemble_minus_mean_member"]["nll"] is None
    for split in SPLITS:
        members_p = [probabilities(folder / "members" / str(n), split) for n in range(3)]
        np.testing.assert_allclose(done.arrays[f"{split}_probabilities"], combine(members_p, np.ones(3), "vote"),
                                   atol=1e-6)
        shares = done.arrays[f"{split}_probabilities"].astype(np.float64) * 3
        np.testing.assert_allclose(shares, np.round(shares), atol=1e-5)


def test_resume_refuses_a_member_trained_with_other_overrides(cli, bagging, tmp_path):
    folder = copy_of(bagging, tmp_path)
    members = files_of(folder / "members")
    changed = tuple("trainer.max_epochs=2" if a == "trainer.max_epochs=1" else a for a in BAGGING)
    result = again(cli, folder, changed, tmp_path / "cwd")
    line = one_line(result, "other overrides", str(folder / "members" / "0"), "start it in a new folder")
    assert "trainer.max_epochs=1" in line and "trainer.max_epochs=2" in line, line
    assert files_of(folder / "members") == members  # nothing removed, nothing trained


# --- boosting ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def boosted(cli, tmp_path_factory) -> Trained:
    return train_ensemble(cli, tmp_path_factory.mktemp("boosting"), *BOOSTING)


def test_boosting_member_0_on_a_bootstrap_then_on_the_weights(cli, boosted):
    weights_dir = boosted.folder / "sample_weights"
    assert sorted(p.name for p in weights_dir.iterdir()) == ["1.npy"]  # the last member's update is not needed
    first, second = saved_overrides(boosted.member(0)), saved_overrides(boosted.member(1))
    assert first["data.bootstrap"] == "True" and "data.sample_weights" not in first and first["seed"] == "0"
    assert second["data.sample_weights"] == str((weights_dir / "1.npy").resolve()) and second["seed"] == "1"
    assert "data.bootstrap" not in second and cli.config(boosted.member(1))["data"]["bootstrap"] is False
    assert first["data.split_seed"] == second["data.split_seed"] == "0"
    for n in range(2):
        assert load_npz(boosted.member(n) / "predictions.npz")["train_probabilities"].shape == (TRAIN_SIZE, CLASSES)


def test_boosting_rounds_are_samme_on_the_members_training_predictions(boosted):
    rounds, rows = boosted.summary["rounds"], boosted.summary["members"]
    assert [r["member"] for r in rounds] == [0, 1] and [r["name"] for r in rows] == ["0", "1"]
    weights = boosting.uniform(TRAIN_SIZE)
    for n, (step, row) in enumerate(zip(rounds, rows)):
        if n:
            weights = np.load(boosted.folder / "sample_weights" / f"{n}.npy", allow_pickle=False)
            assert weights.shape == (TRAIN_SIZE,) and weights.sum() == pytest.approx(1) and (weights > 0).all()
        wrong = wrong_on_train(boosted.member(n))
        error = float(np.sum(weights * wrong) / np.sum(weights))
        assert 0 < error < 0.9, error  # better than chance, not perfect: boosting goes on
        alpha = float(np.log((1 - error) / error) + np.log(CLASSES - 1))
        assert step["weighted_error"] == pytest.approx(error, rel=1e-9) and step["stop"] is None, step
        assert step["alpha"] == pytest.approx(alpha, rel=1e-9) and row["weight"] == pytest.approx(alpha, rel=1e-9)
    # member 1's weights: SAMME's update of the uniform weights with member 0's mistakes
    wrong = wrong_on_train(boosted.member(0))
    update = np.exp(rounds[0]["alpha"] * wrong) / np.sum(np.exp(rounds[0]["alpha"] * wrong))
    np.testing.assert_allclose(np.load(boosted.folder / "sample_weights" / "1.npy"), update, rtol=1e-9)
    # member 1 is weighed by its errors on the samples member 0 got wrong: its weighted error is not its plain one
    assert rounds[1]["weighted_error"] != pytest.approx(float(wrong_on_train(boosted.member(1)).mean()))


def test_boosting_is_a_vote_weighted_by_alpha(boosted):
    alphas = np.array([r["alpha"] for r in boosted.summary["rounds"]])
    assert boosted.summary["combine"] == "vote"
    for split in SPLITS:
        tops = [np.eye(CLASSES)[probabilities(boosted.member(n), split).argmax(1)] for n in range(2)]
        shares = (alphas[0] * tops[0] + alphas[1] * tops[1]) / alphas.sum()
        np.testing.assert_allclose(boosted.arrays[f"{split}_probabilities"], shares, atol=1e-6)
    assert_ensemble_files(boosted, "boosting", 2, vote=True)


# --- stacking: out-of-fold (ensemble.folds=2) and blending ------------------------------------------------------------


@pytest.fixture(scope="module")
def folded(cli, tmp_path_factory) -> Trained:
    return train_ensemble(cli, tmp_path_factory.mktemp("folded"), *FOLDED)


@pytest.fixture(scope="module")
def blended(cli, tmp_path_factory) -> Trained:
    return train_ensemble(cli, tmp_path_factory.mktemp("blended"), *BLENDING)


def out_of_fold(done: Trained, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Member n's out-of-fold training-split probabilities, assembled from its two fold runs, and the labels."""
    oof, labels = np.full((TRAIN_SIZE, CLASSES), np.nan), None
    for k in range(2):
        arrays = load_npz(done.member(n, k) / "predictions.npz")
        oof[arrays["fold_index"]] = arrays["train_probabilities"][arrays["fold_index"]]
        labels = arrays["train_labels"]
    return oof, labels


def test_folded_members_train_once_per_fold_and_cover_the_training_split(cli, folded):
    for n in range(2):
        assert sorted(p.name for p in folded.member(n).iterdir() if p.is_dir()) == ["0", "1"]
        held = []
        for k in range(2):
            run = folded.member(n, k)
            saved = saved_overrides(run)
            assert saved["data.fold"] == f"{k}/2" and saved["seed"] == str(n) and saved["data.split_seed"] == "0"
            assert "data.bootstrap" not in saved, saved
            cli.assert_finite(cli.metrics(run))
            arrays = load_npz(run / "predictions.npz")
            assert arrays["train_probabilities"].shape == (TRAIN_SIZE, CLASSES)
            held.append(arrays["fold_index"])
        assert len(np.intersect1d(*held)) == 0
        np.testing.assert_array_equal(np.sort(np.concatenate(held)), np.arange(TRAIN_SIZE))
        assert not np.isnan(out_of_fold(folded, n)[0]).any()
    # the same folds for both members (from the split seed, not the member's seed)
    np.testing.assert_array_equal(load_npz(folded.member(0, 1) / "predictions.npz")["fold_index"],
                                  load_npz(folded.member(1, 1) / "predictions.npz")["fold_index"])


def test_folded_meta_learner_is_fitted_on_the_out_of_fold_predictions(folded):
    summary = folded.summary
    assert (summary["meta"], summary["folds"], summary["fitted_on"]) == ("logistic", 2, "train (out-of-fold)")
    assert "note" not in summary
    with np.load(folded.folder / "meta.npz", allow_pickle=False) as saved:  # numbers only, no pickled object
        meta = {k: saved[k] for k in saved.files}
    assert sorted(meta) == ["classes", "coef", "intercept"]
    assert meta["coef"].shape == (CLASSES, 2 * CLASSES) and meta["intercept"].shape == (CLASSES,)
    np.testing.assert_array_equal(meta["classes"], np.arange(CLASSES))
    oof = [out_of_fold(folded, n) for n in range(2)]
    model = fitted_logistic([p for p, _ in oof], oof[0][1], seed=0)
    np.testing.assert_allclose(meta["coef"], model.coef_, atol=1e-6)
    for split in SPLITS:
        # a member's val and test probabilities: the mean of its fold runs'
        members = [np.mean([probabilities(folded.member(n, k), split) for k in range(2)], axis=0) for n in range(2)]
        for row, p in zip(summary["members"], members):
            assert row[split] == pytest.approx(scores(p, folded.arrays[f"{split}_labels"]), abs=1e-9)
        expected = stacking.predict(meta, members, CLASSES)
        np.testing.assert_allclose(folded.arrays[f"{split}_probabilities"], expected, atol=1e-6)
        np.testing.assert_allclose(expected, model.predict_proba(np.concatenate(members, axis=1)), atol=1e-6)
    assert_ensemble_files(folded, "stacking", 2)


def test_blended_members_train_with_their_own_override_sets(cli, blended):
    first, second = cli.config(blended.member(0)), cli.config(blended.member(1))
    assert first["model"]["depth"] == 1 and first["optimizer"]["lr"] == 0.01 and first["seed"] == 0
    assert second["optimizer"]["lr"] == 0.003 and second["model"]["depth"] != 1 and second["seed"] == 1
    assert first["data"]["split_seed"] == second["data"]["split_seed"] == 0
    assert first["data"]["bootstrap"] is False and first["data"]["fold"] is None
    assert "train_probabilities" not in load_npz(blended.member(0) / "predictions.npz")  # not resampled


def test_blended_meta_learner_is_fitted_on_the_validation_split(blended):
    summary = blended.summary
    assert (summary["folds"], summary["fitted_on"]) == (0, "val (blending)") and "meta-learner saw" in summary["note"]
    meta = stacking.load(blended.folder / "meta.npz")
    members = {s: [probabilities(blended.member(n), s) for n in range(2)] for s in SPLITS}
    model = fitted_logistic(members["val"], blended.arrays["val_labels"], seed=0)
    for split in SPLITS:
        np.testing.assert_allclose(blended.arrays[f"{split}_probabilities"],
                                   stacking.predict(meta, members[split], CLASSES), atol=1e-6)
        np.testing.assert_allclose(blended.arrays[f"{split}_probabilities"],
                                   model.predict_proba(np.concatenate(members[split], axis=1)), atol=1e-5)
    assert_ensemble_files(blended, "stacking", 2)
    assert "(the validation scores of a blended ensemble" in (blended.folder / "summary.md").read_text()


def test_blending_started_again_keeps_members_whose_own_set_repeats_a_shared_key(cli, blended, tmp_path):
    folder = copy_of(blended, tmp_path)
    members = files_of(folder / "members")
    result = again(cli, folder, BLENDING, tmp_path / "cwd")
    assert result.returncode == 0, result.describe()
    assert files_of(folder / "members") == members


# --- bad inputs of `dlopt ensemble`: nothing trains -------------------------------------------------------------------


BAD = {  # id -> (arguments, needles of the one line)
    "no method and no runs": ((), ("give method=bagging|boosting|stacking", "runs=SWEEP_DIR")),
    "method and runs": (("method=bagging", "runs=/tmp"), ("give method=bagging", "runs=/tmp", "not both")),
    "misspelled method": (("method=bagg",), ("method=bagg is not valid", "did you mean bagging?")),
    "one member": (("method=bagging", "ensemble.members=1"), ("ensemble.members=1 is not valid",
                                                             "an integer >= 2")),
    "one override set": (("method=stacking", "ensemble.members=[x]"), ("ensemble.members=['x'] is not valid",
                                                                       "at least 2 override sets")),
    "unknown meta-learner": (("method=stacking", "ensemble.meta=logit"), ("ensemble.meta=logit is not valid",
                                                                          "did you mean logistic?")),
    "one fold": (("method=stacking", "ensemble.folds=1"), ("ensemble.folds=1 is not valid", "an integer >= 2")),
    "folds of bagging": (("method=bagging", "ensemble.folds=3"), ("ensemble.folds=3 is stacking's",
                                                                  "leave ensemble.folds=0")),
    "a set that does not compose": (("method=stacking", 'ensemble.members=["model=cnn","model=mlpp"]'),
                                    ("ensemble.members[1]=model=mlpp does not compose",
                                     "model=mlpp is not an option of model")),
    "an unknown experiment": (("method=stacking", 'ensemble.members=["nosuchexp","model=mlp"]'),
                              ("ensemble.members[0]=experiment=nosuchexp does not compose",)),
    "a bad train override": (("method=bagging", "optimizer.lr=-1"), ("optimizer.lr=-1 is not valid",)),
    "resume": (("method=bagging", "resume=/tmp"), ("resume= does not apply to an ensemble's members",
                                                   "hydra.run.dir=ITS_FOLDER")),
    "unquoted list": (("method=stacking", "ensemble.members=[model=cnn,model=mlp]"),
                      ("must be quoted for Hydra", """'ensemble.members=["model=cnn","model=mlp"]'""")),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_ensemble_input_is_one_line_and_leaves_nothing(in_process, tmp_path, case):
    args, needles = BAD[case]
    result = in_process.run("ensemble", *args, cwd=tmp_path)
    one_line(result, *needles)
    assert not (tmp_path / "outputs").exists(), sorted(map(str, (tmp_path / "outputs").rglob("*")))


def test_a_search_with_a_method_is_one_line_and_leaves_nothing(in_process, tmp_path):
    """search=... makes the command a sweep of itself (hydra.mode=MULTIRUN): Hydra's lines announcing the search
    and its first trial come first, then the one line; no trial after the first, no folder."""
    result = in_process.run("ensemble", "method=bagging", "search=random", cwd=tmp_path)
    assert result.returncode == 2, result.describe()
    assert_fails_clearly(result, tmp_path, "search= does not apply to an ensemble's members",
                         "dlopt ensemble runs=SEARCH_DIR")
    assert "#1 :" not in result.output, result.describe()
    assert not (tmp_path / "outputs").exists(), sorted(map(str, (tmp_path / "outputs").rglob("*")))
