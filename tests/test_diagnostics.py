"""End to end: the diagnostics group (dlopt/diagnostics/recorder.py) in real `dlopt train` runs.

- every run folder gets diagnostics.jsonl (a header naming the layers, step records every
  `diagnostics.every_n_steps` optimizer steps, one activations record per epoch), diagnostics.png and
  TensorBoard scalars and histograms under diagnostics/; diagnostics=none records none of it and
  diagnostics=full adds weight histograms;
- the records are written as they come: a run that fails mid-training keeps the earlier epochs';
- a symptom while training is one warning, listed in metrics.json (a healthy run lists none);
- a bad diagnostics option or value is one line naming the key, exit 2, and no run folder.

Trainings are tiny (digits, a few batches) and share finished runs through module-scoped fixtures.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BATCHES = 5  # optimizer steps per epoch in every run below
EPOCHS = 2
STEPS = (f"trainer.max_epochs={EPOCHS}", f"trainer.limit_train_batches={BATCHES}", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2")
DEEP_SIGMOID = ("model=mlp", "model.depth=8", "model.activation=sigmoid")


def faults_env(**extra: str) -> dict[str, str]:
    """tests/ on PYTHONPATH, so that +callbacks.X._target_=faults.Y builds a fault of tests/faults.py."""
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p), **extra}


def strict_line(line: str):
    """One JSON line parsed as standard JSON: NaN and Infinity are not JSON and fail here."""

    def reject(constant: str):
        raise ValueError(f"non-JSON constant {constant} in {line[:200]}")

    return json.loads(line, parse_constant=reject)


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "diagnostics.jsonl").read_text().splitlines()
    assert lines and all(line.strip() for line in lines), lines
    return [strict_line(line) for line in lines]


def of_kind(rows: list[dict], kind: str) -> list[dict]:
    return [r for r in rows if r["kind"] == kind]


def network_layers(run_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The Conv/Linear module names of the run's network in order, and its activation modules by name
    (built again in this process from the run's own config)."""
    from omegaconf import OmegaConf
    from torch import nn

    from dlopt.training.run import build

    _, module = build(OmegaConf.load(run_dir / ".hydra" / "config.yaml"))
    kinds = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}
    weights = [n for n, m in module.net.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    activations = {n: kinds[type(m)] for n, m in module.net.named_modules() if type(m) in kinds}
    return weights, activations


def tensorboard(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, int]]:
    """Every scalar (tag -> [(step, value)]) and every histogram (tag -> how many) the run logged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    histograms: dict[str, int] = {}
    for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        events = EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0})
        events.Reload()
        tags = events.Tags()
        for tag in tags["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in events.Scalars(tag))
        for tag in tags["histograms"]:
            histograms[tag] = histograms.get(tag, 0) + len(events.Histograms(tag))
    return scalars, histograms


def recorder_warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if "[dlopt.diagnostics.recorder][WARNING]" in line]


@pytest.fixture(scope="module")
def runs(cli, tmp_path_factory):
    """runs(*overrides) -> (run folder, output of dlopt train); each distinct run trains once per module."""
    cache = {}

    def run(*overrides: str):
        if overrides not in cache:
            cwd = tmp_path_factory.mktemp("run")
            before = set(cli.run_dirs(cwd))
            result = cli.ok("train", *cli.TINY, *STEPS, *overrides, cwd=cwd)
            [run_dir] = [d for d in cli.run_dirs(cwd) if d not in before]
            cache[overrides] = (run_dir, result.output)
        return cache[overrides]

    return run


def expected_steps(every: int) -> list[int]:
    return [s for s in range(EPOCHS * BATCHES) if s % every == 0]


# --- 1. what a run records ----------------------------------------------------------------------------------------


def test_default_run_writes_records_in_network_order(cli, runs):
    run_dir, _ = runs()
    rows = records(run_dir)
    weights, activations = network_layers(run_dir)
    assert weights == ["features.0", "features.4", "features.8", "head.3"]  # the default cnn: 3 convs, a linear head
    header = rows[0]
    assert header["kind"] == "layers" and [r["kind"] for r in rows].count("layers") == 1
    assert header["weights"] == weights
    assert header["activations"] == activations and set(activations.values()) == {"relu"}
    assert header["classes"] == 10 == cli.metrics(run_dir)["classes"]
    assert {r["kind"] for r in rows} == {"layers", "step", "activations"}

    steps = of_kind(rows, "step")  # every 20 optimizer steps by default: of 10 steps, step 0 only
    assert [r["step"] for r in steps] == expected_steps(20) == [0]
    for row in steps:
        assert row["epoch"] == row["step"] // BATCHES + 1  # epochs count from 1
        for key in ("grad_norm", "weight_norm", "update_ratio"):
            if key == "update_ratio" and row["step"] == 0:  # Adam's first step moves every weight by lr: not recorded
                assert row[key] == {}
                continue
            assert list(row[key]) == weights, (key, row[key])  # every layer, in network order
            assert all(math.isfinite(v) and v > 0 for v in row[key].values()), (key, row[key])
        assert row["total_grad_norm"] == pytest.approx(math.sqrt(sum(v * v for v in row["grad_norm"].values())))
        assert math.isfinite(row["loss"]) and 0 < row["loss"] < 10

    acts = of_kind(rows, "activations")  # one per epoch, on the same validation samples
    assert [r["epoch"] for r in acts] == list(range(1, EPOCHS + 1))
    assert [r["step"] for r in acts] == [BATCHES * (e + 1) for e in range(EPOCHS)]
    for row in acts:
        assert list(row["dead"]) == list(activations) and row["saturated"] == {}
        assert all(0.0 <= v <= 1.0 for v in row["dead"].values()), row["dead"]
        assert set(row["mean"]) == set(row["std"]) == set(activations)
        assert all(v >= 0 for v in row["mean"].values())  # after a ReLU
    assert (run_dir / "diagnostics.png").read_bytes()[:8] == PNG_MAGIC


def test_default_run_logs_diagnostics_to_tensorboard(runs):
    run_dir, _ = runs()
    weights, activations = network_layers(run_dir)
    scalars, histograms = tensorboard(run_dir)
    for tag in ("diagnostics/total_grad_norm", "diagnostics/grad_ratio_first_last"):
        assert len(scalars.get(tag, [])) == len(expected_steps(20)), (tag, sorted(scalars))  # one per step record
        assert all(math.isfinite(v) for _, v in scalars[tag])
    assert "diagnostics/update_ratio_median" not in scalars  # step 0 only, whose Adam update ratio is not recorded
    for name in activations:
        assert len(scalars.get(f"diagnostics/dead/{name}", [])) == EPOCHS, sorted(scalars)
        assert histograms.get(f"diagnostics/activation/{name}") == EPOCHS, histograms  # histograms=epoch
    for name in weights:  # gradient histograms at the first recorded step of each epoch: step 0
        assert histograms.get(f"diagnostics/grad/{name}") == 1, histograms
    assert not [t for t in histograms if t.startswith("diagnostics/weight/")], histograms  # only diagnostics=full


def test_diagnostics_none_records_nothing(cli, runs):
    run_dir, output = runs("diagnostics=none")
    assert not (run_dir / "diagnostics.jsonl").exists() and not (run_dir / "diagnostics.png").exists()
    scalars, histograms = tensorboard(run_dir)
    assert "val/loss" in scalars  # the run logged its metrics, only no diagnostics
    assert not [t for t in [*scalars, *histograms] if t.startswith("diagnostics/")], [*scalars, *histograms]
    assert cli.metrics(run_dir)["warnings"] == [] and not recorder_warnings(output)


def test_diagnostics_full_adds_weight_histograms_at_every_record(runs):
    run_dir, _ = runs("diagnostics=full")
    weights, _ = network_layers(run_dir)
    steps = [r["step"] for r in of_kind(records(run_dir), "step")]
    assert steps == expected_steps(4) == [0, 4, 8]  # full records every 4 steps
    _, histograms = tensorboard(run_dir)
    for name in weights:  # histograms=step: gradients and weights at every record
        assert histograms.get(f"diagnostics/weight/{name}") == len(steps), histograms
        assert histograms.get(f"diagnostics/grad/{name}") == len(steps), histograms


@pytest.mark.parametrize("every", [1, 3])
def test_every_n_steps_sets_how_often_steps_are_recorded(runs, every):
    run_dir, _ = runs(f"diagnostics.every_n_steps={every}")
    rows = records(run_dir)
    assert rows[0]["every_n_steps"] == every
    steps = of_kind(rows, "step")
    assert [r["step"] for r in steps] == expected_steps(every)  # 10 records for N=1, steps 0, 3, 6, 9 for N=3
    assert [r["epoch"] for r in steps] == [s // BATCHES + 1 for s in expected_steps(every)]
    assert len(of_kind(rows, "activations")) == EPOCHS  # activations stay once per epoch


# --- 2. records are written as they come -------------------------------------------------------------------------


FAULTS = {
    # the loss becomes NaN at the start of epoch 2 and, without the finite check, the run fails (exit 2)
    "nan": (("callbacks.early_stopping.check_finite=false", "+callbacks.blowup._target_=faults.BlowUpAt",
             "+callbacks.blowup.epoch=2"), {}, 2),
    # SIGKILL at the second batch of epoch 2: no cleanup at all, as the OOM killer does
    "kill": (("+callbacks.kill._target_=faults.KillAt", "+callbacks.kill.epoch=2", "+callbacks.kill.batch=1"),
             {"DLOPT_TEST_KILL": "1"}, -9),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_run_that_fails_mid_training_keeps_the_earlier_epochs_records(cli, tmp_path, fault):
    overrides, env, code = FAULTS[fault]
    result = cli.run("train", *cli.TINY, "model=mlp", "trainer.max_epochs=4", f"trainer.limit_train_batches={BATCHES}",
                     "diagnostics.every_n_steps=2", *overrides, cwd=tmp_path, env=faults_env(**env))
    assert result.returncode == code, result.describe()
    assert "Traceback" not in result.output, result.describe()
    if fault == "nan":
        assert "the training loss became nan at epoch 3" in result.output, result.describe()
    [run_dir] = cli.run_dirs(tmp_path)
    assert not (run_dir / "metrics.json").exists()
    rows = records(run_dir)  # every line a complete JSON record
    assert rows[0]["kind"] == "layers" and rows[0]["weights"] == ["features.1", "features.5", "head"]
    steps = [r["step"] for r in of_kind(rows, "step")]
    assert steps[:5] == [0, 2, 4, 6, 8] and all(s >= 10 for s in steps[5:]), steps  # epochs 0 and 1 in full
    assert all(r["epoch"] <= 3 for r in rows[1:])  # epochs count from 1: the third is the one that failed
    assert [r["epoch"] for r in of_kind(rows, "activations")] == [1, 2]
    history = json.loads((run_dir / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    if fault == "nan":  # the failure reached the recorder, which drew what it had
        assert (run_dir / "diagnostics.png").read_bytes()[:8] == PNG_MAGIC


# --- 3. warnings while training ----------------------------------------------------------------------------------


def test_a_deep_sigmoid_mlp_warns_once_of_vanishing_gradients(cli, runs):
    run_dir, output = runs(*DEEP_SIGMOID, "trainer.max_epochs=3")
    warned = [line for line in recorder_warnings(output) if "vanishing gradients" in line]
    assert len(warned) == 1, "\n".join(recorder_warnings(output))  # once, though every epoch shows it
    assert "features.1" in warned[0] and "threshold 0.001" in warned[0], warned
    logged = [line for line in (run_dir / "train.log").read_text().splitlines() if "vanishing gradients" in line]
    assert len(logged) == 1 and "[WARNING]" in logged[0], logged
    listed = cli.metrics(run_dir)["warnings"]
    assert [w for w in listed if w.startswith("vanishing gradients:")] == [warned[0].split("] - ", 1)[1]], listed
    rows = records(run_dir)
    assert set(rows[0]["activations"].values()) == {"sigmoid"}
    for row in of_kind(rows, "activations"):  # sigmoid layers are measured for saturation, not for dead units
        assert row["dead"] == {} and list(row["saturated"]) == list(rows[0]["activations"])


def test_a_healthy_cnn_run_warns_of_nothing(cli, runs):
    run_dir, output = runs()
    assert cli.metrics(run_dir)["warnings"] == []
    assert recorder_warnings(output) == []


# --- 4. bad inputs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, needles",
    [
        ("diagnostics=nope", ("diagnostics=nope is not an option of diagnostics", "default, full, none")),
        ("diagnostics.every_n_steps=0", ("diagnostics.every_n_steps=0 is not valid", "an integer >= 1")),
        ("diagnostics.every_n_steps=-3", ("diagnostics.every_n_steps=-3 is not valid", "an integer >= 1")),
        ("diagnostics.thresholds.dead=abc", ("diagnostics.thresholds.dead=abc is not valid", "a number > 0")),
        ("diagnostics.histograms=sometimes", ("diagnostics.histograms=sometimes is not valid", "epoch, step, none")),
        ("diagnostics.weight_histograms=maybe", ("diagnostics.weight_histograms=maybe is not valid", "true or false")),
        ("diagnostics.samples=0", ("diagnostics.samples=0 is not valid", "an integer >= 1")),
    ],
)
def test_bad_diagnostics_input_is_one_line_and_leaves_no_run(in_process, tmp_path, override, needles):
    result = in_process.run("train", *in_process.TINY, override, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.output, result.describe()
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), result.describe()
    assert not (tmp_path / "outputs").exists(), sorted(map(str, (tmp_path / "outputs").rglob("*")))


def test_diagnostics_png_of_a_run_that_recorded_nothing_draws_without_a_warning(tmp_path):
    import warnings

    from dlopt.diagnostics.plot import plot_diagnostics

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels found to put in legend" among them
        plot_diagnostics([], tmp_path / "diagnostics.png")
    assert (tmp_path / "diagnostics.png").is_file()
