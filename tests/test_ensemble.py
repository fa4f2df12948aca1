"""`dlopt ensemble runs=SWEEP_DIR | runs=[RUN,...]` (dlopt/apps/ensemble.py, dlopt/ensemble/).

Without training, on synthetic probabilities (in-process, and through the command on fake run folders: a
.hydra/config.yaml, metrics.json and predictions.npz written here):
- scores: accuracy, NLL (by hand, a zero probability floored) and the expected calibration error of a small
  hand-computed case, a confidence of exactly 1.0 counted in the last of the 15 bins;
- combine: the weighted mean of the probabilities, and a vote's weighted class shares;
- top_k: the k best objectives for mode min and max (a run without an objective last), also through the command
  on runs that monitor val/acc;
- greedy (Caruana's ensemble selection on validation NLL, with replacement): it starts from the best member, takes
  a member whose errors complement it, never a member worse on every sample; the ensemble's validation NLL is below
  every member's; weights (counts) sum to ensemble.rounds;
- members: failed (with the reason of error.txt), unfinished, pruned, non-training runs and runs without or with an
  unreadable predictions.npz are skipped and named (in the log and ensemble.json); runs of other labels (one line
  suggesting data.split_seed=0), of other classes or with another monitor are refused; run folders named by
  numbers and by words side by side are read; the command imports no torch.

End to end on a real sweep (`dlopt train -m seed=0,1,2 data.split_seed=0 model=mlp`, 6 short epochs, whole
val/test splits):
- every run saved predictions.npz (the whole 270-sample val and test splits of digits, float32 probabilities
  summing to 1, the same labels in every run) and reports val/ece and test/ece, which agree with its predictions;
- greedy/mean: ensemble.json (weights summing to 25, every score recomputed from the members' predictions, the
  differences to the best and to the mean member), metrics.json, predictions.npz (the weighted mean of the
  members'), summary.md (every run), ensemble.png; the ensemble beats every member on validation NLL; the runs are
  left untouched;
- ensemble.select=top_k ensemble.k=2, ensemble.combine=vote (no NLL), runs=[A,B];
- bad inputs: exit 2, one line naming the key, nothing left under outputs/.

The sweep trains once (module-scoped fixture); each `dlopt ensemble` takes about a second.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dlopt.ensemble.members import read
from dlopt.ensemble.scores import BINS, calibration_error, scores
from dlopt.ensemble.selection import combine, greedy, top_k
from dlopt.errors import UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPLIT_SIZE = 270  # digits: 15% of 1797 samples each for val and test
SPLITS = ("val", "test")
ARRAYS = {"val_probabilities", "val_labels", "test_probabilities", "test_labels"}
# three seeds on the same data split: 6 epochs of 10 batches at lr 0.01 (test acc ~0.95), val/test splits whole
SWEEP = ("-m", "seed=0,1,2", "data.split_seed=0", "model=mlp", "optimizer.lr=0.01", "trainer.max_epochs=6",
         "trainer.limit_train_batches=10", "trainer.limit_val_batches=null", "trainer.limit_test_batches=null")


def strict_json(path: Path):
    def reject(constant: str):
        raise ValueError(f"{path} holds the non-JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:  # plain arrays, no pickled objects
        return {key: npz[key] for key in npz.files}


def files_of(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def one_line(result, *needles: str) -> str:
    """Exit 2, no traceback, and the whole output one line holding every needle."""
    assert result.returncode == 2 and "Traceback" not in result.output, result.describe()
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), (needles, result.describe())
    return lines[0]


# --- fake runs: synthetic probabilities in run folders ----------------------------------------------------------------


def one_hot_like(labels: np.ndarray, true_probability: np.ndarray, classes: int) -> np.ndarray:
    """Probabilities giving the true class `true_probability` and sharing the rest equally among the others."""
    p = np.repeat(((1 - true_probability) / (classes - 1))[:, None], classes, axis=1)
    p[np.arange(len(labels)), labels] = true_probability
    return p


def fake_run(folder: Path, val: np.ndarray, test: np.ndarray, *, val_labels: np.ndarray, test_labels: np.ndarray,
             objective: float | None = 0.5, monitor: str = "val/loss", mode: str = "min", **metrics) -> Path:
    """A finished training run as dlopt ensemble reads it: .hydra/config.yaml, metrics.json, predictions.npz."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\nmodel:\n  depth: 2\n")
    values = {"monitor": monitor, "mode": mode, "objective": objective, "test/acc": 0.5, "pruned": False, **metrics}
    (folder / "metrics.json").write_text(json.dumps(values))
    np.savez(folder / "predictions.npz", val_probabilities=val.astype(np.float32), val_labels=val_labels,
             test_probabilities=test.astype(np.float32), test_labels=test_labels)
    return folder


# 20 validation and 20 test samples of 2 classes
LABELS = np.arange(20) % 2
FIRST14 = np.arange(20) < 14


def probabilities(right: np.ndarray, sure: float, unsure: float) -> np.ndarray:
    """2-class probabilities: the true class gets `sure` where `right`, `unsure` elsewhere."""
    return one_hot_like(LABELS, np.where(right, sure, unsure), 2)


# A: right on samples 0..13, clearly the best alone; B: right on A's mistakes (14..19); C: worse than both everywhere
MEMBER_A = probabilities(FIRST14, 0.9, 0.2)
MEMBER_B = probabilities(~FIRST14, 0.9, 0.3)
MEMBER_C = probabilities(FIRST14, 0.05, 0.05)


def complementary(root: Path, names=("0", "1", "2")) -> list[Path]:
    """Runs A, B and C (the first len(names) of them; val and test the same) under root, objective = their
    validation NLL."""
    return [fake_run(root / name, p, p, val_labels=LABELS, test_labels=LABELS, objective=scores(p, LABELS)["nll"])
            for name, p in zip(names, (MEMBER_A, MEMBER_B, MEMBER_C))]


def failed_run(folder: Path, reason: str | None) -> Path:
    """A run that wrote no metrics.json: a failed run of a sweep (error.txt) or one still running."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 1\n")
    if reason is not None:
        (folder / "error.txt").write_text(f"{reason}\n")
    return folder


# --- A. scores --------------------------------------------------------------------------------------------------------


def test_accuracy_and_nll_by_hand():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    labels = np.array([0, 1, 0, 1])
    found = scores(p, labels)
    assert found["acc"] == pytest.approx(0.5)  # the top classes 0, 1, 2, 0
    assert found["nll"] == pytest.approx(-(math.log(0.7) + math.log(0.6) + math.log(0.2) + math.log(0.4)) / 4)
    # a zero probability of the true class (a vote's share) is floored: finite, and very wrong
    zero = scores(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1, 1]))
    assert math.isfinite(zero["nll"]) and zero["nll"] == pytest.approx(-math.log(1e-12) / 2, rel=1e-6)
    assert zero["acc"] == 0.5


def test_calibration_error_by_hand_with_a_confidence_of_one_in_the_last_bin():
    p = np.array([[0.0, 1.0],     # confidence 1.0, wrong: bin 14 (not a 16th bin of its own)
                  [0.95, 0.05],   # 0.95 right: bin 14 (14.25)
                  [0.38, 0.62],   # 0.62 right: bin 9 (9.3)
                  [0.7, 0.3]])    # 0.70 wrong: bin 10 (10.5)
    labels = np.array([0, 0, 1, 1])
    assert BINS == 15
    # bin 14: accuracy 1/2, confidence 0.975, 2 of 4 samples; bin 9: |1 - 0.62| / 4; bin 10: |0 - 0.7| / 4
    expected = abs(0.5 - 0.975) * 2 / 4 + 0.38 / 4 + 0.7 / 4
    assert calibration_error(p, labels) == pytest.approx(expected)  # 0.5075
    phantom = 1.0 / 4 + 0.05 / 4 + 0.38 / 4 + 0.7 / 4  # 1.0 binned alone (torchmetrics' issue 3510)
    assert calibration_error(p, labels) != pytest.approx(phantom)
    assert scores(p, labels)["ece"] == pytest.approx(expected)
    # calibrated: 4 of 5 right at confidence 0.8 (bin 12)
    calibrated = np.array([[0.8, 0.2]] * 5)
    assert calibration_error(calibrated, np.array([0, 0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-12)


# --- A. combine, top_k, greedy ----------------------------------------------------------------------------------------


def test_combine_mean_is_the_weighted_average():
    rng = np.random.default_rng(0)
    p1, p2, p3 = (rng.dirichlet(np.ones(4), size=6) for _ in range(3))
    mixed = combine([p1, p2, p3], np.array([3.0, 1.0, 0.0]), "mean")
    np.testing.assert_allclose(mixed, (3 * p1 + p2) / 4)
    np.testing.assert_allclose(mixed.sum(1), 1)
    np.testing.assert_allclose(combine([p1, p2], np.array([2, 2])), (p1 + p2) / 2)  # mean is the default


def test_combine_vote_is_the_weighted_share_of_the_top_classes():
    p1 = np.array([[0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])  # top classes 0, 1
    p2 = np.array([[0.2, 0.7, 0.1], [0.2, 0.5, 0.3]])  # 1, 1
    p3 = np.array([[0.5, 0.1, 0.4], [0.3, 0.3, 0.4]])  # 0, 2
    shares = combine([p1, p2, p3], np.array([2, 1, 1]), "vote")
    np.testing.assert_allclose(shares, [[0.75, 0.25, 0.0], [0.0, 0.75, 0.25]])


def test_top_k_picks_the_best_objectives_for_min_and_max():
    objectives = [0.5, 0.2, None, 0.9, 0.3]
    assert top_k(objectives, 2, "min").tolist() == [0, 1, 0, 0, 1]
    assert top_k(objectives, 2, "max").tolist() == [1, 0, 0, 1, 0]
    # a run without an objective ranks last either way
    assert top_k(objectives, 4, "min").tolist() == [1, 1, 0, 1, 1]
    assert top_k(objectives, 4, "max").tolist() == [1, 1, 0, 1, 1]
    assert top_k(objectives, 5, "min").sum() == 5


def test_greedy_takes_the_best_and_its_complement_never_a_worse_member():
    members = [MEMBER_A, MEMBER_B, MEMBER_C]
    nll = [scores(p, LABELS)["nll"] for p in members]
    assert nll[0] < nll[1] < nll[2]  # A is the best alone
    weights, steps = greedy(members, LABELS, 25)
    assert weights.sum() == 25 and len(steps) == 25
    assert steps[0].tolist() == [1, 0, 0]  # it starts from the best member
    for before, after in itertools.pairwise(steps):  # one member added per round, with replacement
        assert (after - before).sum() == 1 and (after >= before).all()
    np.testing.assert_array_equal(steps[-1], weights)
    assert weights[0] > weights[1] > 0, weights  # both A and its complement B
    assert all(s[2] == 0 for s in steps), weights  # C, worse than A and B on every sample, is never taken
    ensemble_nll = scores(combine(members, weights), LABELS)["nll"]
    assert ensemble_nll < min(nll), (ensemble_nll, nll)


def test_greedy_gives_every_round_to_a_member_better_on_every_sample():
    better = probabilities(FIRST14, 0.95, 0.25)  # A, surer where right and less wrong elsewhere
    weights, _ = greedy([MEMBER_A, better, MEMBER_C], LABELS, 7)
    assert weights.tolist() == [0, 7, 0]


# --- A. members: read directly ----------------------------------------------------------------------------------------


def test_read_skips_and_names_unusable_runs(tmp_path):
    a, b = complementary(tmp_path, names=("0", "1"))
    failed_run(tmp_path / "2", "model.depth=-1 is not valid: expected an integer >= 1")
    failed_run(tmp_path / "3", None)
    fake_run(tmp_path / "4", MEMBER_A, MEMBER_A, val_labels=LABELS, test_labels=LABELS, pruned=True)
    (fake_run(tmp_path / "5", MEMBER_A, MEMBER_A, val_labels=LABELS, test_labels=LABELS) / "predictions.npz").unlink()
    eval_run = fake_run(tmp_path / "6", MEMBER_A, MEMBER_A, val_labels=LABELS, test_labels=LABELS)
    (eval_run / "metrics.json").write_text(json.dumps({"test/acc": 0.5}))  # not a training run: no monitor
    found = read(str(tmp_path))
    assert [m.run for m in found.members] == [a, b]
    assert (found.monitor, found.mode) == ("val/loss", "min")
    np.testing.assert_array_equal(found.labels["val"], LABELS)
    np.testing.assert_allclose(found.members[1].probabilities["test"], MEMBER_B, atol=1e-7)
    why = {run.name: reason for run, reason in found.skipped}
    assert sorted(why) == ["2", "3", "4", "5", "6"], found.skipped
    assert "failed" in why["2"] and "model.depth=-1 is not valid" in why["2"]
    assert "no metrics.json" in why["3"]
    assert why["4"] == "pruned"
    assert "no predictions.npz" in why["5"]
    assert "not a training run" in why["6"]
    # a list of run folders reads the same way; a folder that is no run is refused by name
    assert [m.run for m in read([str(a), str(b), str(tmp_path / "4")]).members] == [a, b]
    with pytest.raises(UserError, match=f"runs: {tmp_path} is not a dlopt run folder"):
        read([str(a), str(tmp_path)])
    with pytest.raises(UserError, match="does not exist"):
        read(str(tmp_path / "nowhere"))


def test_read_refuses_runs_of_other_labels_classes_or_monitors(tmp_path):
    complementary(tmp_path / "labels", names=("0", "1"))
    shuffled = LABELS[::-1].copy()  # another split of the same data: other labels in another order
    fake_run(tmp_path / "labels" / "2", MEMBER_A, MEMBER_A, val_labels=shuffled, test_labels=LABELS)
    with pytest.raises(UserError) as err:
        read(str(tmp_path / "labels"))
    assert "different data" in str(err.value) and "data.split_seed=0" in str(err.value)
    assert "\n" not in str(err.value)

    complementary(tmp_path / "classes", names=("0", "1"))
    three = np.hstack([MEMBER_A * 0.9, np.full((20, 1), 0.1)])  # the same labels, 3 classes
    fake_run(tmp_path / "classes" / "2", three, three, val_labels=LABELS, test_labels=LABELS)
    with pytest.raises(UserError, match="different data or classes"):
        read(str(tmp_path / "classes"))

    complementary(tmp_path / "monitor", names=("0", "1"))
    fake_run(tmp_path / "monitor" / "2", MEMBER_A, MEMBER_A, val_labels=LABELS, test_labels=LABELS,
             monitor="val/acc", mode="max", objective=0.7)
    with pytest.raises(UserError, match="monitors val/acc"):
        read(str(tmp_path / "monitor"))


# --- A. the command on fake runs --------------------------------------------------------------------------------------


@dataclass
class Ensembled:
    """One finished `dlopt ensemble`: its output, folder and files."""

    output: str
    folder: Path
    summary: dict
    metrics: dict
    arrays: dict[str, np.ndarray]


def ensemble(cli, cwd: Path, *args: str, runs: list[Path] = ()) -> Ensembled:
    """`dlopt ensemble ARGS` in cwd: exit 0, no traceback, one new outputs/ensemble/DATE/TIME folder, nothing written
    into the `runs`."""
    cwd.mkdir(parents=True, exist_ok=True)
    before = {run: files_of(run) for run in runs}
    result = cli.ok("ensemble", *args, cwd=cwd, timeout=120)
    [folder] = cli.run_dirs(cwd, "ensemble")
    assert {run: files_of(run) for run in runs} == before, "dlopt ensemble changed the runs it read"
    return Ensembled(result.output, folder, strict_json(folder / "ensemble.json"),
                     strict_json(folder / "metrics.json"), load_npz(folder / "predictions.npz"))


@pytest.fixture(scope="module")
def fake_sweep(cli, tmp_path_factory) -> tuple[Path, Ensembled]:
    """A, B, C and five unusable runs in one folder, ensembled by default (greedy, mean)."""
    root = tmp_path_factory.mktemp("fake") / "sweep"
    complementary(root)
    failed_run(root / "3", "data.fraction=2 is not valid: expected a number in (0, 1]")
    failed_run(root / "4", None)
    fake_run(root / "5", MEMBER_A, MEMBER_A, val_labels=LABELS, test_labels=LABELS, pruned=True)
    (fake_run(root / "6", MEMBER_A, MEMBER_A, val_labels=LABELS, test_labels=LABELS) / "predictions.npz").unlink()
    return root, ensemble(cli, tmp_path_factory.mktemp("fake_cwd"), f"runs={root}", runs=[root])


def test_the_command_skips_unusable_runs_and_names_them(fake_sweep):
    root, done = fake_sweep
    skipped = {Path(s["run"]).name: s["why"] for s in done.summary["skipped"]}
    assert sorted(skipped) == ["3", "4", "5", "6"], done.summary["skipped"]
    assert "failed: data.fraction=2 is not valid" in skipped["3"]
    assert "no metrics.json" in skipped["4"] and skipped["5"] == "pruned" and "no predictions.npz" in skipped["6"]
    for name, why in skipped.items():
        assert f"skipped {root / name}: {why}" in done.output, (name, done.output)
    log = (done.folder / "ensemble.log").read_text()
    assert f"skipped {root / '3'}: failed: data.fraction=2" in log
    assert [m["name"] for m in done.summary["members"]] == ["0", "1", "2"]
    assert "ensemble of 2 of 3 runs (greedy, mean)" in done.output


def test_the_command_selects_greedily_on_validation_nll(fake_sweep):
    _, done = fake_sweep
    weights = {m["name"]: m["weight"] for m in done.summary["members"]}
    assert sum(weights.values()) == 25 and weights["0"] > weights["1"] > 0 and weights["2"] == 0, weights
    nll = {m["name"]: m["val"]["nll"] for m in done.summary["members"]}
    assert nll["0"] == pytest.approx(scores(MEMBER_A, LABELS)["nll"], abs=1e-6)
    assert done.summary["ensemble"]["val"]["nll"] < min(nll.values()), (done.summary["ensemble"], nll)
    assert done.summary["best_member"] == "0" and done.metrics["members"] == 2
    expected = combine([MEMBER_A, MEMBER_B], np.array([weights["0"], weights["1"]]))
    np.testing.assert_allclose(done.arrays["val_probabilities"], expected, atol=1e-6)


ONE_RUN = "greedy selection kept one run, {name}: no other run lowered its validation NLL, so this is that run alone"


def test_a_greedy_selection_of_one_run_says_so_and_names_top_k(cli, fake_sweep, tmp_path):
    """Issue 24: it printed 'ensemble of 1 of 3 runs' and gains of +0.0000 without a word."""
    root = tmp_path / "runs"
    better = probabilities(FIRST14, 0.95, 0.25)  # better than A and C on every sample: greedy takes it alone
    for name, p in (("0", MEMBER_A), ("1", better), ("2", MEMBER_C)):
        fake_run(root / name, p, p, val_labels=LABELS, test_labels=LABELS, objective=scores(p, LABELS)["nll"])
    done = ensemble(cli, tmp_path / "cwd", f"runs={root}", runs=[root])
    assert [m["weight"] for m in done.summary["members"]] == [0, 25, 0] and done.metrics["members"] == 1
    note = done.summary["note"]
    assert note.startswith(ONE_RUN.format(name="1")) and "not an ensemble" in note, note
    assert note.endswith("ensemble.select=top_k ensemble.k=N averages the N best (2 <= N <= 3) instead"), note
    assert f"({note})" in (done.folder / "summary.md").read_text()
    assert "not an ensemble: 1 of 3 runs kept (greedy, mean)" in done.output and note in done.output
    assert "ensemble of 1" not in done.output
    assert "note" not in fake_sweep[1].summary  # a selection of two runs: no note


def test_top_k_ranks_runs_that_monitor_accuracy_highest_first(cli, tmp_path):
    root = tmp_path / "runs"
    for name, objective, p in (("0", 0.6, MEMBER_B), ("1", 0.9, MEMBER_A), ("2", 0.7, MEMBER_C)):
        fake_run(root / name, p, p, val_labels=LABELS, test_labels=LABELS, monitor="val/acc", mode="max",
                 objective=objective)
    done = ensemble(cli, tmp_path / "cwd", f"runs={root}", "ensemble.select=top_k", "ensemble.k=2")
    assert {m["name"]: m["weight"] for m in done.summary["members"]} == {"0": 0, "1": 1, "2": 1}
    assert done.summary["monitor"] == "val/acc" and done.summary["select"] == "top_k"
    np.testing.assert_allclose(done.arrays["test_probabilities"], (MEMBER_A + MEMBER_C) / 2, atol=1e-6)


def test_runs_of_other_labels_are_refused_in_one_line_suggesting_a_fixed_split(in_process, tmp_path):
    root = tmp_path / "runs"
    complementary(root, names=("0", "1"))
    fake_run(root / "2", MEMBER_A, MEMBER_A, val_labels=LABELS, test_labels=LABELS[::-1].copy())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    one_line(in_process.run("ensemble", f"runs={root}", cwd=cwd), "trained on different data", "test samples differ",
             "data.split_seed=0")
    assert not (cwd / "outputs").exists(), sorted(map(str, (cwd / "outputs").rglob("*")))


def test_runs_with_another_monitor_are_refused_in_one_line(in_process, tmp_path):
    root = tmp_path / "runs"
    complementary(root, names=("0", "1"))
    fake_run(root / "2", MEMBER_A, MEMBER_A, val_labels=LABELS, test_labels=LABELS, monitor="val/acc", mode="max")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    one_line(in_process.run("ensemble", f"runs={root}", cwd=cwd), f"runs: {root / '2'} monitors val/acc",
             "ranked by one monitor")
    assert not (cwd / "outputs").exists()


def test_runs_with_an_unreadable_predictions_file_are_skipped_and_named(cli, tmp_path):
    """A predictions.npz cut short (a copy interrupted), empty, or not numpy's: skipped like a missing one."""
    root = tmp_path / "runs"
    complementary(root, names=("0", "1"))
    whole = (root / "0" / "predictions.npz").read_bytes()
    for name, content in (("2", whole[: len(whole) // 2]), ("3", b""), ("4", b"not an npz file")):
        fake_run(root / name, MEMBER_A, MEMBER_A, val_labels=LABELS, test_labels=LABELS)
        (root / name / "predictions.npz").write_bytes(content)
    done = ensemble(cli, tmp_path / "cwd", f"runs={root}")
    skipped = {Path(s["run"]).name: s["why"] for s in done.summary["skipped"]}
    assert sorted(skipped) == ["2", "3", "4"], done.summary["skipped"]
    assert all("predictions.npz is not readable" in why for why in skipped.values()), skipped
    assert len(done.summary["members"]) == 2


def test_run_folders_named_by_numbers_and_by_words_are_read(cli, tmp_path):
    """Runs collected by hand into one folder: 0, 1 and baseline."""
    root = tmp_path / "runs"
    complementary(root, names=("0", "1", "baseline"))
    done = ensemble(cli, tmp_path / "cwd", f"runs={root}")
    assert sorted(m["name"] for m in done.summary["members"]) == ["0", "1", "baseline"]


def test_the_command_imports_no_torch(cli, fake_sweep, tmp_path):
    root, _ = fake_sweep
    code = ("import sys\nfrom dlopt.cli import main\n"
            f"sys.argv = ['dlopt', 'ensemble', 'runs={root}']\nmain()\n"
            "print('torch imported:', 'torch' in sys.modules)")
    result = cli.python(code, cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    assert "ensemble of 2 of 3 runs" in result.output and "torch imported: False" in result.stdout, result.describe()


# --- B. end to end: a real sweep --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep(cli, tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("sweep")
    cli.ok("train", *SWEEP, cwd=cwd, timeout=600)
    [folder] = cli.sweep_dirs(cwd)
    return folder


@pytest.fixture(scope="module")
def runs(sweep) -> list[Path]:
    found = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name))
    assert [p.name for p in found] == ["0", "1", "2"], found
    return found


@pytest.fixture(scope="module")
def greedy_mean(cli, sweep, runs, tmp_path_factory) -> Ensembled:
    return ensemble(cli, tmp_path_factory.mktemp("greedy"), f"runs={sweep}", runs=runs)


@pytest.fixture(scope="module")
def best_two(cli, sweep, runs, tmp_path_factory) -> Ensembled:
    return ensemble(cli, tmp_path_factory.mktemp("top_k"), f"runs={sweep}", "ensemble.select=top_k", "ensemble.k=2",
                    runs=runs)


@pytest.fixture(scope="module")
def vote(cli, sweep, runs, tmp_path_factory) -> Ensembled:
    return ensemble(cli, tmp_path_factory.mktemp("vote"), f"runs={sweep}", "ensemble.combine=vote", runs=runs)


def member_arrays(runs: list[Path]) -> list[dict[str, np.ndarray]]:
    return [load_npz(run / "predictions.npz") for run in runs]


def test_every_run_saved_its_predictions_on_the_whole_splits(cli, runs):
    arrays = member_arrays(runs)
    for run, found in zip(runs, arrays):
        assert set(found) == ARRAYS, (run, sorted(found))
        for split in SPLITS:
            p, labels = found[f"{split}_probabilities"], found[f"{split}_labels"]
            assert p.dtype == np.float32 and p.shape == (SPLIT_SIZE, 10), (run, split, p.dtype, p.shape)
            assert np.issubdtype(labels.dtype, np.integer) and labels.shape == (SPLIT_SIZE,), (run, split)
            assert (p >= 0).all() and np.allclose(p.sum(1), 1, atol=1e-5), (run, split)
            assert set(labels.tolist()) == set(range(10)), (run, split)
            # data.split_seed=0: every seed has the same samples in the same order
            np.testing.assert_array_equal(labels, arrays[0][f"{split}_labels"])
        metrics = cli.metrics(run)
        for split in SPLITS:
            ece = metrics[f"{split}/ece"]
            assert isinstance(ece, float) and 0 <= ece <= 1, (run, split, ece)
            # metrics.json's val/test scores are those of the saved predictions (the best checkpoint, whole splits)
            mine = scores(found[f"{split}_probabilities"].astype(np.float64), found[f"{split}_labels"])
            assert mine["acc"] == pytest.approx(metrics[f"{split}/acc"], abs=1e-6), (run, split)
            assert mine["nll"] == pytest.approx(metrics[f"{split}/loss"], rel=1e-4), (run, split)
            assert mine["ece"] == pytest.approx(ece, abs=1e-4), (run, split)
        assert metrics["test/acc"] > 0.85, metrics  # it learned


def test_greedy_ensemble_json_agrees_with_the_members_predictions(cli, greedy_mean, runs):
    summary = greedy_mean.summary
    assert (summary["select"], summary["combine"], summary["monitor"]) == ("greedy", "mean", "val/loss")
    assert summary["skipped"] == []
    rows = summary["members"]
    assert [r["name"] for r in rows] == ["0", "1", "2"] and [r["run"] for r in rows] == [str(r) for r in runs]
    weights = np.array([r["weight"] for r in rows])
    assert weights.sum() == 25 and (weights == np.round(weights)).all(), weights
    assert (weights > 0).sum() >= 2, weights  # the seeds complement each other: more than one is taken
    arrays = member_arrays(runs)
    for row, run, found in zip(rows, runs, arrays):
        assert row["objective"] == pytest.approx(cli.metrics(run)["objective"])
        for split in SPLITS:
            mine = scores(found[f"{split}_probabilities"].astype(np.float64), found[f"{split}_labels"])
            assert row[split] == pytest.approx(mine, abs=1e-9), (row["name"], split)
    for split in SPLITS:
        mean = sum(w * a[f"{split}_probabilities"].astype(np.float64) for w, a in zip(weights, arrays)) / weights.sum()
        # the ensemble's predictions.npz is the weighted mean of the members'; its scores those of that mean
        np.testing.assert_allclose(greedy_mean.arrays[f"{split}_probabilities"], mean, atol=1e-6)
        assert greedy_mean.arrays[f"{split}_probabilities"].dtype == np.float32
        np.testing.assert_array_equal(greedy_mean.arrays[f"{split}_labels"], arrays[0][f"{split}_labels"])
        assert summary["ensemble"][split] == pytest.approx(scores(mean, arrays[0][f"{split}_labels"]), abs=1e-9)
    # greedy selection improves on every member where it selects: validation NLL
    assert summary["ensemble"]["val"]["nll"] < min(r["val"]["nll"] for r in rows), summary["ensemble"]
    # the best member (lowest validation NLL among those taken) and the mean member, on the test split
    taken = [r for r in rows if r["weight"] > 0]
    best = min(taken, key=lambda r: r["val"]["nll"])
    assert summary["best_member"] == best["name"]
    test = summary["ensemble"]["test"]
    for key in ("acc", "nll", "ece"):
        assert summary["ensemble_minus_best_member"][key] == pytest.approx(test[key] - best["test"][key], abs=1e-9)
        mean_member = np.mean([r["test"][key] for r in taken])
        assert summary["ensemble_minus_mean_member"][key] == pytest.approx(test[key] - mean_member, abs=1e-9)
    # the ensemble as it grows: one entry per round, the last is the ensemble
    assert len(summary["curve"]) == 25 and summary["curve"][-1] == pytest.approx(test)
    assert summary["curve"][0] == pytest.approx(rows[int(np.argmin([r["val"]["nll"] for r in rows]))]["test"])


def test_greedy_writes_metrics_summary_and_picture(greedy_mean):
    folder, summary, metrics = greedy_mean.folder, greedy_mean.summary, greedy_mean.metrics
    test = summary["ensemble"]["test"]
    assert metrics["kind"] == "ensemble" and metrics["members"] == sum(r["weight"] > 0 for r in summary["members"])
    assert (metrics["test/acc"], metrics["test/loss"], metrics["test/ece"]) == pytest.approx(
        (test["acc"], test["nll"], test["ece"]))
    assert metrics["val/loss"] == pytest.approx(summary["ensemble"]["val"]["nll"])
    table = (folder / "summary.md").read_text()
    for row in summary["members"]:
        assert f"| {row['name']} | {row['weight']:g} | {row['val']['nll']:.4f} | {row['test']['acc']:.4f} |" in table
    assert f"| **ensemble** | | {summary['ensemble']['val']['nll']:.4f} | {test['acc']:.4f} |" in table
    assert f"ensemble - best member ({summary['best_member']}, by val nll)" in table
    assert table in greedy_mean.output  # the same table in the log
    data = (folder / "ensemble.png").read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10000, len(data)
    from PIL import Image

    with Image.open(folder / "ensemble.png") as picture:
        assert min(picture.size) >= 300, picture.size
    assert f"ensemble of {metrics['members']} of 3 runs (greedy, mean)" in (folder / "ensemble.log").read_text()


def test_top_k_takes_the_two_best_runs_by_objective(cli, best_two, runs):
    summary = best_two.summary
    objectives = [cli.metrics(run)["objective"] for run in runs]
    best = {str(i) for i in np.argsort(objectives)[:2]}  # monitor val/loss: lowest first
    assert {r["name"]: r["weight"] for r in summary["members"]} == {str(i): float(str(i) in best) for i in range(3)}
    arrays = [a for a, run in zip(member_arrays(runs), runs) if run.name in best]
    mean = (arrays[0]["test_probabilities"].astype(np.float64) + arrays[1]["test_probabilities"]) / 2
    np.testing.assert_allclose(best_two.arrays["test_probabilities"], mean, atol=1e-6)
    assert summary["ensemble"]["test"] == pytest.approx(scores(mean, arrays[0]["test_labels"]), abs=1e-9)
    assert len(summary["curve"]) == 2 and summary["curve"][-1] == pytest.approx(summary["ensemble"]["test"])
    assert best_two.metrics["members"] == 2
    assert "ensemble of 2 of 3 runs (top_k, mean)" in best_two.output


def test_a_vote_has_no_nll(vote, greedy_mean):
    summary = vote.summary
    assert summary["combine"] == "vote"
    assert summary["ensemble"]["test"]["nll"] is None and summary["ensemble"]["val"]["nll"] is None
    assert summary["ensemble_minus_best_member"]["nll"] is None and summary["ensemble_minus_mean_member"]["nll"] is None
    assert vote.metrics["test/loss"] is None and isinstance(vote.metrics["test/acc"], float)
    assert isinstance(vote.metrics["test/ece"], float)
    # the selection is greedy on the mean's NLL either way: the same weights as greedy_mean's
    assert [r["weight"] for r in summary["members"]] == [r["weight"] for r in greedy_mean.summary["members"]]
    shares = vote.arrays["test_probabilities"].astype(np.float64) * 25  # weights sum to 25: shares in 25ths
    np.testing.assert_allclose(shares, np.round(shares), atol=1e-4)
    np.testing.assert_allclose(vote.arrays["test_probabilities"].sum(1), 1, atol=1e-5)
    assert summary["ensemble"]["test"]["acc"] == pytest.approx(
        float((vote.arrays["test_probabilities"].argmax(1) == vote.arrays["test_labels"]).mean()))
    assert "| **ensemble** | | - |" in (vote.folder / "summary.md").read_text()


def test_a_list_of_runs(cli, runs, tmp_path):
    done = ensemble(cli, tmp_path, f"runs=[{runs[0]},{runs[2]}]", runs=runs)
    rows = done.summary["members"]
    assert [r["run"] for r in rows] == [str(runs[0]), str(runs[2])] and [r["name"] for r in rows] == [
        str(runs[0]), str(runs[2])]
    assert sum(r["weight"] for r in rows) == 25
    assert f"| {runs[0]} |" in (done.folder / "summary.md").read_text()


# --- B. bad inputs ----------------------------------------------------------------------------------------------------


BAD = {  # id -> (arguments, needles of the one line); {sweep}, {empty}, {one} are filled in
    "misspelled selection": (("runs={sweep}", "ensemble.select=greddy"),
                             ("ensemble.select=greddy is not valid", "did you mean greedy?", "greedy, top_k")),
    "unknown combination": (("runs={sweep}", "ensemble.combine=avg"),
                            ("ensemble.combine=avg is not valid", "mean, vote")),
    "k of one": (("runs={sweep}", "ensemble.select=top_k", "ensemble.k=1"),
                 ("ensemble.k=1 is not valid: expected an integer >= 2",)),
    "k above the runs": (("runs={sweep}", "ensemble.select=top_k", "ensemble.k=9"),
                         ("ensemble.k=9 is more than the 3 finished runs", "give at most 3")),
    "no rounds": (("runs={sweep}", "ensemble.rounds=0"), ("ensemble.rounds=0 is not valid: expected an integer >= 1",)),
    "a folder without runs": (("runs={empty}",), ("runs={empty} holds no dlopt run folders",)),
    "no runs": ((), ("give method=bagging|boosting|stacking", "or runs=SWEEP_DIR")),
    "empty runs": (("runs=",), ("give method=bagging|boosting|stacking", "or runs=SWEEP_DIR")),
    "one finished run": (("runs={one}",), ("runs={one} has 1 finished run(s) to combine",
                                           "an ensemble needs at least 2", "failed: out of memory")),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_input_is_one_line_and_leaves_nothing(in_process, sweep, runs, tmp_path, case):
    args, needles = BAD[case]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a run\n")
    one = tmp_path / "one"  # a finished run and a failed one
    one.mkdir()
    shutil.copytree(runs[0] / ".hydra", one / "0" / ".hydra")
    for name in ("metrics.json", "predictions.npz"):
        shutil.copy(runs[0] / name, one / "0" / name)
    failed_run(one / "1", "out of memory")
    names = {"sweep": sweep, "empty": empty, "one": one}
    before = files_of(sweep)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = in_process.run("ensemble", *(a.format(**names) for a in args), cwd=cwd)
    one_line(result, *(n.format(**names) for n in needles))
    assert not (cwd / "outputs").exists(), sorted(map(str, (cwd / "outputs").rglob("*")))
    assert files_of(sweep) == before


def test_a_real_greedy_selection_that_keeps_one_run_says_so(cli, tmp_path):
    """A trained run and an untrained one (lr 1e-9: near-uniform predictions) on one split: greedy keeps the trained
    one alone (at most 4 rounds of 5 could add the other, each with a share of 1/2 to 1/5) and says so; top_k
    averages both, as the note says."""
    cwd = tmp_path / "train"
    cwd.mkdir()
    cli.ok("train", "-m", "optimizer.lr=0.01,1e-9", "seed=0", "data.split_seed=0", "model=mlp", "trainer.max_epochs=2",
           "trainer.limit_train_batches=10", "trainer.limit_val_batches=null", "trainer.limit_test_batches=null",
           cwd=cwd, timeout=600)
    [sweep] = cli.sweep_dirs(cwd)
    done = ensemble(cli, tmp_path / "greedy", f"runs={sweep}", "ensemble.rounds=5")
    assert [m["weight"] for m in done.summary["members"]] == [5, 0], done.summary["members"]
    assert done.summary["note"].startswith(ONE_RUN.format(name="0"))
    assert "ensemble.select=top_k ensemble.k=2 averages both instead" in done.summary["note"]
    assert "not an ensemble: 1 of 2 runs kept" in done.output
    both = ensemble(cli, tmp_path / "top_k", f"runs={sweep}", "ensemble.select=top_k", "ensemble.k=2")
    assert both.metrics["members"] == 2 and "note" not in both.summary


def test_ensemble_png_counts_members_in_whole_numbers_and_names_grey_only_when_a_member_is_left_out(tmp_path,
                                                                                                   monkeypatch):
    import matplotlib.pyplot as plt

    from dlopt.ensemble import plot

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to look at it
    members = [{"name": f"m{i}", "weight": w, "test": {"acc": 0.9 + i / 100, "nll": 0.3}} for i, w in enumerate((1, 1))]
    curve = [{"acc": 0.9, "nll": 0.3}, {"acc": 0.92, "nll": 0.25}]
    for weights, grey in (((1, 1), False), ((1, 0), True)):
        for member, weight in zip(members, weights):
            member["weight"] = weight
        plot.plot_ensemble(members, {"acc": 0.92, "nll": 0.25}, curve, tmp_path / "ensemble.png")
        bars, _, growth = figures[-1].axes[:3]
        assert ("grey" in bars.get_title()) is grey
        assert all(float(t).is_integer() for t in growth.get_xticks())
        figures[-1].canvas.draw()
        legend = growth.get_legend().get_window_extent()
        assert legend.y1 <= growth.get_window_extent().y0  # below the plot, over no data
