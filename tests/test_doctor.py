"""End to end: `dlopt doctor run=RUN_DIR` on real runs (dlopt/apps/doctor.py, dlopt/diagnostics/).

- a healthy run is called healthy, and reading a run leaves no outputs/doctor folder;
- runs trained to be sick (a deep sigmoid MLP, a learning rate far too high or too low, a tiny
  training split, too few epochs) get their symptom, its evidence and remedies as complete
  `dlopt train` commands: the run's own overrides with the remedy's replacing those of the same key;
- a run that stopped on a NaN loss, a run without per-layer records and a sweep's folder are read too;
- try=true trains the original and its top remedy as one sweep and compares them;
- bad inputs and corrupt run files are one line naming the key or file, exit 2, nothing written.

Trainings are small (digits, a few batches, seeds fixed) and shared through module-scoped fixtures.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

SMALL = ("trainer.limit_train_batches=5", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2")
HEALTHY = ("trainer.max_epochs=3", "trainer.limit_train_batches=8", "trainer.limit_val_batches=2",
           "trainer.limit_test_batches=2")
DEEP_SIGMOID = ("model=mlp", "model.depth=8", "model.activation=sigmoid", "trainer.max_epochs=3",
                "trainer.limit_train_batches=10", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2")
LR_TOO_HIGH = ("model=mlp", "optimizer.lr=1", "trainer.max_epochs=3", *SMALL)  # adam at lr=1
LR_TOO_LOW = ("optimizer.lr=1e-7", "trainer.max_epochs=3", "diagnostics.every_n_steps=2", *SMALL)  # steps after 0 recorded
# 5% of the training split (one batch of 63 images), no regularization, nothing stops it early
OVERFIT = ("model=mlp", "data.fraction=0.05", "optimizer.lr=0.01", "scheduler=none", "regularization=none",
           "callbacks.early_stopping=null", "trainer.max_epochs=20", "trainer.limit_test_batches=2")
NOT_CONVERGED = ("trainer.max_epochs=4", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
                 "trainer.limit_test_batches=2")
# plain SGD at lr=50: the training loss becomes NaN in epoch 1 and early stopping's finite check ends the run
NAN = ("model=mlp", "optimizer=sgd", "optimizer.lr=50", "trainer.max_epochs=3", *SMALL)


def strict_json(path: Path):
    def reject(constant: str):
        raise ValueError(f"{path} holds the non-JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


def key_of(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def overrides_of(run_dir: Path) -> list[str]:
    return list(yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or [])


def expected_command(run_dir: Path, remedy: list[str]) -> str:
    """The run's own overrides (a key given twice: the last, which Hydra applies), those of the remedy's keys
    replaced by the remedy's."""
    replaced = {key_of(o) for o in remedy}
    own = {key_of(o): o for o in overrides_of(run_dir)}  # insertion order of first sight, value of the last
    kept = [o for o in overrides_of(run_dir) if own[key_of(o)] == o and key_of(o) not in replaced]
    return " ".join(["dlopt", "train", *(shlex.quote(o) for o in kept), *map(shlex.quote, remedy)])


def doctor(cli, cwd: Path, *args: str, timeout: float = 600):
    """`dlopt doctor ARGS` in cwd, exit 0 and no traceback."""
    cwd.mkdir(parents=True, exist_ok=True)
    return cli.ok("doctor", *args, cwd=cwd, timeout=timeout)


def report(run_dir: Path) -> dict:
    return strict_json(run_dir / "doctor.json")


def symptom(found: dict, name: str) -> dict:
    matches = [s for s in found["symptoms"] if s["symptom"] == name]
    assert len(matches) == 1, (name, [(s["symptom"], s["measure"], s["evidence"]) for s in found["symptoms"]])
    return matches[0]


def check_remedies(run_dir: Path, entry: dict, stdout: str) -> None:
    """Every remedy is a complete `dlopt train` command built from the run's overrides; the first three
    are printed."""
    assert entry["remedies"], entry
    for i, remedy in enumerate(entry["remedies"]):
        assert remedy["command"] == expected_command(run_dir, remedy["overrides"]), remedy
        if i < 3:
            assert f"      {remedy['command']}\n" in stdout + "\n", (remedy["command"], stdout)


def lr_of(remedy: dict) -> float:
    [value] = [o.partition("=")[2] for o in remedy["overrides"] if o.startswith("optimizer.lr=")]
    return float(value)


def nothing_written(cwd: Path, *targets: Path) -> None:
    assert not (cwd / "outputs").exists(), sorted(map(str, (cwd / "outputs").rglob("*")))
    for target in targets:
        assert not list(Path(target).rglob("doctor.json")), list(Path(target).rglob("doctor.json"))


@pytest.fixture(scope="module")
def runs(cli, tmp_path_factory):
    """runs(*overrides) -> the folder of `dlopt train TINY OVERRIDES`; each distinct run trains once per module."""
    cache = {}

    def run(*overrides: str) -> Path:
        if overrides not in cache:
            cache[overrides] = cli.train(*overrides, cwd=tmp_path_factory.mktemp("run"))
        return cache[overrides]

    return run


@pytest.fixture(scope="module")
def sweep(cli, tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("sweep")
    cli.ok("train", "-m", "seed=0,1", *cli.TINY, "trainer.max_epochs=2", "model=mlp", "model.width=16", cwd=cwd)
    [folder] = cli.sweep_dirs(cwd)
    return folder


def copy_run(run_dir: Path, into: Path) -> Path:
    """A copy of a run folder without the doctor.json an earlier test may have left."""
    target = into / "run"
    shutil.copytree(run_dir, target)
    for old in target.rglob("doctor.json"):
        old.unlink()
    return target


# --- 5. a healthy run -----------------------------------------------------------------------------------------------


def test_a_healthy_run_is_healthy_and_leaves_no_doctor_folder(cli, runs, tmp_path):
    run_dir = runs(*HEALTHY)
    metrics = cli.metrics(run_dir)
    assert metrics["train/acc"] > 0.9 and metrics["test/acc"] > 0.8, metrics  # it learned
    result = doctor(cli, tmp_path, f"run={run_dir}")
    assert "healthy: no symptom found" in result.stdout, result.describe()
    assert "remedy" not in result.stdout
    found = report(run_dir)
    assert found["healthy"] is True and found["symptoms"] == [] and found["recorded_layers"] is True
    assert not (tmp_path / "outputs").exists()  # reading a run writes only its doctor.json


# --- 6. vanishing gradients ----------------------------------------------------------------------------------------


def test_a_deep_sigmoid_mlp_has_vanishing_gradients_and_remedies_as_commands(cli, runs, tmp_path):
    run_dir = runs(*DEEP_SIGMOID)
    result = doctor(cli, tmp_path, f"run={run_dir}")
    found = report(run_dir)
    assert found["healthy"] is False
    entry = symptom(found, "vanishing_gradients")
    assert found["symptoms"][0]["symptom"] == "vanishing_gradients"  # the most fundamental first here
    assert 0 < entry["measure"] < 1e-3 and entry["measure_name"] == "first/last gradient ratio", entry
    assert "VANISHING GRADIENTS: |grad| of features.1 / head" in result.stdout, result.describe()
    assert f"likely cause: {entry['cause']}" in result.stdout
    check_remedies(run_dir, entry, result.stdout)
    first = entry["remedies"][0]
    assert first["overrides"] == ["model.activation=leaky_relu"], entry["remedies"]
    words = shlex.split(first["command"])
    assert "model.activation=leaky_relu" in words and "model.activation=sigmoid" not in words
    assert {"model=mlp", "model.depth=8", "trainer.max_epochs=3", "trainer.limit_train_batches=10"} <= set(words)
    assert f"      {first['command']}" in result.stdout.splitlines()
    assert not (tmp_path / "outputs").exists()


# --- 7. symptoms provoked on purpose --------------------------------------------------------------------------------


def test_a_learning_rate_far_too_high_is_diagnosed(cli, runs, tmp_path):
    run_dir = runs(*LR_TOO_HIGH)
    result = doctor(cli, tmp_path, f"run={run_dir}")
    found = report(run_dir)
    entry = symptom(found, "lr_too_high")
    # with 5 steps an epoch only step 0 is recorded, whose update ratio does not count (Adam's first step moves
    # every weight by lr): the loss tells, far above a uniform guess
    assert entry["measure_name"] == "best train loss / ln(classes)" and entry["measure"] > 1.5, entry
    assert "LOSS ABOVE A UNIFORM GUESS" in result.stdout, result.describe()
    check_remedies(run_dir, entry, result.stdout)
    assert lr_of(entry["remedies"][0]) < 1, entry["remedies"]  # a smaller lr first
    assert "dead_units" in [s["symptom"] for s in found["symptoms"]]  # what the huge steps did to the ReLUs


def test_a_learning_rate_far_too_low_is_diagnosed(cli, runs, tmp_path):
    run_dir = runs(*LR_TOO_LOW)
    result = doctor(cli, tmp_path, f"run={run_dir}")
    found = report(run_dir)
    names = [s["symptom"] for s in found["symptoms"]]
    assert "lr_too_low" in names and "stuck" in names, names
    entry = symptom(found, "lr_too_low")
    assert entry["measure"] < 1e-5, entry  # update/weight ratio
    assert "LEARNING RATE TOO LOW: update/weight ratio at most" in result.stdout, result.describe()
    check_remedies(run_dir, entry, result.stdout)
    assert lr_of(entry["remedies"][0]) > 1e-7, entry["remedies"]  # a larger lr first
    stuck = symptom(found, "stuck")
    assert stuck["measure"] > 0.9 and "LOSS NEVER LEFT ITS STARTING VALUE" in result.stdout


@pytest.mark.slow
def test_overfitting_on_a_tiny_training_split_is_diagnosed(cli, runs, tmp_path):
    run_dir = runs(*OVERFIT)
    history = strict_json(run_dir / "history.json")
    assert len(history) == 20 and history[-1]["train/acc"] == 1.0, history[-1]
    result = doctor(cli, tmp_path, f"run={run_dir}")
    found = report(run_dir)
    entry = symptom(found, "overfitting")
    assert entry["measure"] > 1.1, entry  # last/best val loss
    assert "OVERFITTING: val/loss" in result.stdout, result.describe()
    check_remedies(run_dir, entry, result.stdout)
    remedies = [r["overrides"] for r in entry["remedies"]]
    assert remedies[:2] == [["regularization=dropout"], ["regularization=l2"]], remedies
    words = shlex.split(entry["remedies"][0]["command"])
    assert "regularization=dropout" in words and "regularization=none" not in words  # the group's option replaced


def test_a_run_without_history_json_is_read_from_its_last_checkpoint(cli, runs, tmp_path):
    """A run of a dlopt that wrote no history.json (nor diagnostics.jsonl): its curves come from the history its
    last checkpoint carries."""
    run_dir = tmp_path / "older_run"
    shutil.copytree(runs(*NOT_CONVERGED), run_dir)
    for name in ("history.json", "diagnostics.jsonl", "doctor.json"):
        (run_dir / name).unlink(missing_ok=True)
    result = doctor(cli, tmp_path / "cwd", f"run={run_dir}")
    assert "no per-layer records" in result.stdout, result.describe()
    assert [s["symptom"] for s in report(run_dir)["symptoms"]] == ["not_converged"], result.describe()


def test_a_run_stopped_while_still_improving_is_not_converged(cli, runs, tmp_path):
    run_dir = runs(*NOT_CONVERGED)
    result = doctor(cli, tmp_path, f"run={run_dir}")
    found = report(run_dir)
    assert [s["symptom"] for s in found["symptoms"]] == ["not_converged"], found["symptoms"]
    entry = found["symptoms"][0]
    assert entry["measure"] > 0.02, entry
    assert "NOT CONVERGED: val/loss still improved by" in result.stdout, result.describe()
    check_remedies(run_dir, entry, result.stdout)
    assert entry["remedies"][0]["overrides"] == ["trainer.max_epochs=8"]
    words = shlex.split(entry["remedies"][0]["command"])
    assert [w for w in words if w.startswith("trainer.max_epochs=")] == ["trainer.max_epochs=8"], words


# --- 8. a diverged run, a run without records, a sweep --------------------------------------------------------------


def test_a_run_stopped_on_a_nan_loss_is_diagnosed_from_what_it_recorded(cli, runs, tmp_path):
    run_dir = runs(*NAN)
    metrics = cli.metrics(run_dir)
    assert "the training loss became nan at epoch 2" in metrics["stop_reason"], metrics
    result = doctor(cli, tmp_path, f"run={run_dir}")
    assert "run ended: the training loss became nan at epoch 2" in result.stdout, result.describe()
    found = report(run_dir)
    assert found["recorded_layers"] is True
    entry = symptom(found, "lr_too_high")
    assert found["symptoms"][0]["symptom"] == "lr_too_high"  # the most fundamental first
    assert "stopped: the training loss became nan" in entry["evidence"], entry  # with the update ratio, if recorded
    check_remedies(run_dir, entry, result.stdout)
    assert lr_of(entry["remedies"][0]) < 50, entry["remedies"]


def test_a_run_without_records_is_diagnosed_from_its_curves(cli, runs, tmp_path):
    run_dir = runs(*HEALTHY, "diagnostics=none")
    assert not (run_dir / "diagnostics.jsonl").exists()
    result = doctor(cli, tmp_path, f"run={run_dir}")
    assert "no per-layer records" in result.stdout and "healthy: no symptom found" in result.stdout, result.describe()
    found = report(run_dir)
    assert found["healthy"] is True and found["recorded_layers"] is False
    assert not (tmp_path / "outputs").exists()


def test_a_sweep_folder_gets_one_line_per_run_and_a_report_in_each(cli, sweep, tmp_path):
    result = doctor(cli, tmp_path, f"run={sweep}")
    lines = result.stdout.splitlines()
    for run in ("0", "1"):
        [line] = [line for line in lines if line.startswith(f"{run}: ")]
        assert f"seed={run}" in line and "model=mlp" in line, line
        found = report(sweep / run)
        assert found["run"] == str(sweep / run) and isinstance(found["healthy"], bool)
        listed = ", ".join(s["title"] for s in found["symptoms"]) or "healthy"
        assert line.startswith(f"{run}: {listed}  ["), (line, listed)
    assert f"2 runs in {sweep}" in result.stdout
    assert not (sweep / "doctor.json").exists() and not (tmp_path / "outputs").exists()


# --- 9. try=true ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_try_trains_the_original_and_its_top_remedy_and_compares(cli, runs, tmp_path):
    run_dir = runs(*DEEP_SIGMOID)
    result = doctor(cli, tmp_path, f"run={run_dir}", "try=true", "remedies=1")
    [folder] = [d for d in (tmp_path / "outputs" / "doctor").glob("*/*") if d.is_dir()]
    assert sorted(d.name for d in folder.iterdir() if (d / "metrics.json").is_file()) == ["0", "1"]
    configs = {n: cli.config(folder / n) for n in ("0", "1")}
    assert configs["0"]["model"]["activation"] == "sigmoid" and configs["1"]["model"]["activation"] == "leaky_relu"
    for config in configs.values():  # same seed, same budget, same model otherwise
        assert (config["seed"], config["trainer"]["max_epochs"], config["model"]["depth"]) == (0, 3, 8)
    assert "+remedy=original" in overrides_of(folder / "0") and "+remedy=r1" in overrides_of(folder / "1")
    assert f"runs in {folder})" in result.stdout, result.describe()
    assert "  vanishing gradients -> model.activation=leaky_relu: first/last gradient ratio" in result.stdout

    [tried] = report(run_dir)["tried"]
    assert tried["symptom"] == "vanishing gradients" and tried["remedy"] == "model.activation=leaky_relu"
    assert tried["run"] == str(folder / "1") and tried["symptom_gone"] is True, tried
    assert tried["measure_after"] > 1e-3 > tried["measure_before"], tried
    assert tried["monitor"] == "val/loss" and tried["objective_after"] < tried["objective_before"], tried
    assert tried["objective_before"] == pytest.approx(cli.metrics(folder / "0")["objective"])
    assert tried["objective_after"] == pytest.approx(cli.metrics(folder / "1")["objective"])
    assert tried["test_acc_after"] == pytest.approx(cli.metrics(folder / "1")["test/acc"])
    assert math.isfinite(tried["test_acc_before"])


@pytest.mark.slow
def test_try_a_longer_training_really_trains_longer(cli, runs, tmp_path):
    run_dir = runs(*NOT_CONVERGED)
    doctor(cli, tmp_path, f"run={run_dir}", "try=true", "remedies=1")
    [folder] = [d for d in (tmp_path / "outputs" / "doctor").glob("*/*") if d.is_dir()]
    [tried] = report(run_dir)["tried"]
    assert tried["remedy"] == "trainer.max_epochs=8"
    assert cli.config(folder / "1")["trainer"]["max_epochs"] == 8
    assert cli.metrics(folder / "1")["epochs"] == 8


# --- 10. bad inputs --------------------------------------------------------------------------------------------------


def one_line(result, *needles: str) -> str:
    """Exit 2, no traceback, and the whole output one line holding every needle."""
    assert result.returncode == 2 and "Traceback" not in result.output, result.describe()
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), (needles, result.describe())
    return lines[0]


@pytest.fixture()
def target(runs, tmp_path) -> Path:
    """A copy of a finished healthy run, in a folder of its own."""
    return copy_run(runs(*HEALTHY), tmp_path / "theirs")


@pytest.mark.parametrize(
    "args, needles",
    [
        ((), ("give run=RUN_DIR",)),
        (("run={tmp}/nowhere",), ("run={tmp}/nowhere does not exist",)),
        (("run={tmp}/empty",), ("run={tmp}/empty is not a dlopt run folder",)),
        (("run={tmp}/junk",), ("run={tmp}/junk is not a dlopt run folder",)),
        (("run={run}", "diagnostics=nope"),
         ("diagnostics=nope is not an option of diagnostics", "default, full, none")),
        (("run={run}", "diagnostics.thresholds.dead=abc"), ("diagnostics.thresholds.dead=abc is not valid",)),
        (("run={run}", "diagnostics.every_n_steps=0"), ("diagnostics.every_n_steps=0 is not valid",)),
        (("run={run}", "remedies=0"), ("remedies=0 is not valid", "an integer >= 1")),
        (("run={run}", "remedies=abc"), ("remedies=abc is not valid", "an integer >= 1")),
        (("run={run}", "try=maybe"), ("try=maybe is not valid", "true or false")),
        (("run={sweep}", "try=true"), ("run={sweep} holds 2 runs", "try=true")),
    ],
    ids=["no run", "missing folder", "empty folder", "folder with a file", "unknown diagnostics", "bad threshold",
         "bad every_n_steps", "remedies=0", "remedies=abc", "try=maybe", "try on a sweep"],
)
def test_bad_doctor_input_is_one_line_and_writes_nothing(cli, tmp_path, target, sweep, args, needles):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not a run\n")
    sweep_copy = copy_run(sweep, tmp_path / "sweep")
    names = {"tmp": tmp_path, "run": target, "sweep": sweep_copy}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = cli.run("doctor", *(a.format(**names) for a in args), cwd=cwd, timeout=120)
    one_line(result, *(n.format(**names) for n in needles))
    nothing_written(cwd, target, sweep_copy, tmp_path / "empty", tmp_path / "junk")


def test_try_on_a_healthy_run_trains_nothing(cli, tmp_path, target):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = cli.run("doctor", f"run={target}", "try=true", cwd=cwd, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.output, result.describe()
    errors = [line for line in result.output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and f"run={target} has no symptom to remedy (healthy)" in errors[0], result.describe()
    nothing_written(cwd, target)


CORRUPT = {
    "metrics.json cut short": ("metrics.json", '{"objective": 0.5,', "metrics.json is not valid JSON"),
    "metrics.json a list": ("metrics.json", "[1, 2]", "metrics.json is not a mapping of metrics"),
    "history.json cut short": ("history.json", '[{"epoch": 0, "train/loss": ', "history.json is not valid JSON"),
    "history.json a mapping": ("history.json", '{"epoch": 0}', "history.json is not a list of epoch rows"),
    "history.json binary": ("history.json", b"\x00\xff\xfe garbage", "history.json is not valid JSON"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_a_corrupt_run_file_is_one_line_naming_it(cli, tmp_path, target, case):
    name, content, message = CORRUPT[case]
    path = target / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = cli.run("doctor", f"run={target}", cwd=cwd, timeout=120)
    one_line(result, f"{target / name}", message)
    nothing_written(cwd, target)


WRONG_TYPES = {  # file -> valid JSON whose values have the wrong type
    "metrics.json": '{"classes": "ten", "monitor": "val/loss", "mode": "min"}',
    "diagnostics.jsonl": '{"kind": "step", "epoch": 0, "grad_norm": 5}\n',
}


@pytest.mark.parametrize("name", list(WRONG_TYPES))
def test_a_run_file_with_values_of_the_wrong_type_is_one_line_naming_it(cli, tmp_path, target, name):
    (target / name).write_text(WRONG_TYPES[name])
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = cli.run("doctor", f"run={target}", cwd=cwd, timeout=120)
    one_line(result, str(target / name))
    nothing_written(cwd, target)
