"""End to end: `dlopt doctor run=RUN_DIR` on real runs (dlopt/apps/doctor.py, dlopt/diagnostics/).

- a healthy run is called healthy;
- runs trained to be sick (a deep sigmoid MLP, a learning rate far too high or too low, a tiny
  training split, too few epochs) get their symptom, its evidence and remedies as complete
  `dlopt train` commands: the run's own overrides with the remedy's replacing those of the same key;
- one story per report: one learning rate, whichever symptom proposes it (SGD at lr 5), the root cause
  first (Adam far above its usual range, SGD whose updates are far below those of healthy runs), and a
  remedy that needs more epochs says so;
- too few optimizer steps (a run still improving at max_epochs after fewer than thresholds.few_steps): named
  with its count, before the learning rate's symptoms, its remedy to train longer; the stuck loss it explains
  does not ask for a larger lr; a run with enough steps, one stopped early and one of an older dlopt that did
  not record its steps do not get it (real runs, and the rule on hand-written records);
- a run that stopped on a NaN loss, a run without per-layer records, a run whose records an older dlopt
  cut at a resume and a sweep's folder are read too;
- try=true trains the original and its top remedy as one sweep and compares them;
- doctor.json goes to doctor's own folder, outputs/doctor/DATE/TIME: every run folder it reads is left
  byte for byte as it was (every call below checks it);
- bad inputs and corrupt run files are one line naming the key or file, exit 2, nothing written.

Trainings are small (digits, a few batches, seeds fixed) and shared through module-scoped fixtures.
"""

from __future__ import annotations

import hashlib
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
# 12 optimizer steps, still improving at the end: too few steps (not converged, for a run that did not record its steps)
NOT_CONVERGED = ("trainer.max_epochs=4", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
                 "trainer.limit_test_batches=2")
# a linear model, 2 batches an epoch (cli.TINY's) for 6 epochs: 12 steps, train/loss 2.43 -> 2.25 and falling, above
# 0.9 ln(10)
FEW_STEPS = ("model=linear", "trainer.max_epochs=6", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2")
# plain SGD at lr=50: the training loss becomes NaN in epoch 1 and early stopping's finite check ends the run
NAN = ("model=mlp", "optimizer=sgd", "optimizer.lr=50", "trainer.max_epochs=3", *SMALL)
# issue 24: plain SGD at lr 5 kills the cnn's units in its first step: three symptoms that each propose an lr
SGD_LR5 = ("optimizer=sgd", "optimizer.lr=5", "trainer.max_epochs=3", *SMALL)
# plain SGD at lr 5e-4, all 20 batches an epoch: updates 10x below healthy runs', train/acc 0.33 after 5 epochs
SLOW_SGD = ("optimizer=sgd", "optimizer.lr=5e-4", "trainer.max_epochs=5", "trainer.limit_train_batches=null",
            "trainer.limit_val_batches=2",
            "trainer.limit_test_batches=2")
# Adam at lr 1 on the default cnn, 333x the top of its usual range
ADAM_HUGE = ("optimizer.lr=1", "trainer.max_epochs=3", "diagnostics.every_n_steps=2", *SMALL)
# plain SGD at lr 0.5: its first step moves the weights by a third of their size, yet it learns
SGD_HOT = ("optimizer=sgd", "optimizer.lr=0.5", "trainer.max_epochs=3", "diagnostics.every_n_steps=2", *SMALL)
# a cosine schedule over 12 epochs: the last epoch's updates are tiny, as they should be
COSINE = ("trainer.max_epochs=12", "diagnostics.every_n_steps=5", *SMALL)


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


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder below `folder`: its path and the sha256 of its bytes ("dir" for a folder)."""
    return {str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def doctor(cli, cwd: Path, *args: str, timeout: float = 600):
    """`dlopt doctor ARGS` in cwd, exit 0 and no traceback, the folder of run= left byte for byte as it was."""
    cwd.mkdir(parents=True, exist_ok=True)
    [read] = [Path(a.partition("=")[2]) for a in args if a.startswith("run=")]
    before = snapshot(read)
    result = cli.ok("doctor", *args, cwd=cwd, timeout=timeout)
    assert snapshot(read) == before, f"dlopt doctor changed {read}"
    return result


def report(cwd: Path) -> dict:
    """The doctor.json of the one `dlopt doctor` run in cwd: in its own folder, outputs/doctor/DATE/TIME."""
    [path] = (cwd / "outputs" / "doctor").glob("*/*/doctor.json")
    return strict_json(path)


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
    target = into / "run"
    shutil.copytree(run_dir, target)
    return target


def older_run(run_dir: Path, into: Path) -> Path:
    """A copy of a run as an older dlopt wrote it: its metrics.json without the optimizer steps and batches."""
    target = copy_run(run_dir, into)
    metrics = strict_json(target / "metrics.json")
    assert isinstance(metrics["steps"], int), metrics  # dlopt train records them
    for key in ("steps", "batches_per_epoch", "passes_per_epoch"):
        metrics.pop(key, None)
    (target / "metrics.json").write_text(json.dumps(metrics))
    return target


# --- 5. a healthy run -----------------------------------------------------------------------------------------------


def test_a_healthy_run_is_healthy_and_the_report_goes_to_doctors_own_folder(cli, runs, tmp_path):
    run_dir = runs(*HEALTHY)
    metrics = cli.metrics(run_dir)
    assert metrics["train/acc"] > 0.9 and metrics["test/acc"] > 0.8, metrics  # it learned
    result = doctor(cli, tmp_path, f"run={run_dir}")  # the run folder byte for byte as it was
    assert "healthy: no symptom found" in result.stdout, result.describe()
    assert "remedy" not in result.stdout
    [folder] = cli.run_dirs(tmp_path, "doctor")
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".log")) == [".hydra", "doctor.json"]
    assert result.stdout.splitlines()[-1].endswith(f"results in {folder.resolve()}"), result.describe()
    found = report(tmp_path)
    assert found["run"] == str(run_dir) and found["partial_records"] is None
    assert found["healthy"] is True and found["symptoms"] == [] and found["recorded_layers"] is True
    assert not (run_dir / "doctor.json").exists()


# --- 6. vanishing gradients ----------------------------------------------------------------------------------------


def test_a_deep_sigmoid_mlp_has_vanishing_gradients_and_remedies_as_commands(cli, runs, tmp_path):
    run_dir = runs(*DEEP_SIGMOID)
    result = doctor(cli, tmp_path, f"run={run_dir}")
    found = report(tmp_path)
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


# --- 7. symptoms provoked on purpose --------------------------------------------------------------------------------


def test_a_learning_rate_far_too_high_is_diagnosed(cli, runs, tmp_path):
    run_dir = runs(*LR_TOO_HIGH)
    result = doctor(cli, tmp_path, f"run={run_dir}")
    found = report(tmp_path)
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
    found = report(tmp_path)
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
    found = report(tmp_path)
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
    run_dir = older_run(runs(*NOT_CONVERGED), tmp_path / "older")  # nor its optimizer steps
    for name in ("history.json", "diagnostics.jsonl", "doctor.json"):
        (run_dir / name).unlink(missing_ok=True)
    result = doctor(cli, tmp_path / "cwd", f"run={run_dir}")
    assert "no per-layer records" in result.stdout, result.describe()
    assert [s["symptom"] for s in report(tmp_path / "cwd")["symptoms"]] == ["not_converged"], result.describe()


def test_a_run_stopped_while_still_improving_is_not_converged(cli, runs, tmp_path):
    """Without its optimizer steps (an older dlopt's run) a run still improving at max_epochs is not converged;
    with them, 12 steps are too few (below)."""
    run_dir = older_run(runs(*NOT_CONVERGED), tmp_path / "older")
    result = doctor(cli, tmp_path, f"run={run_dir}")
    found = report(tmp_path)
    assert [s["symptom"] for s in found["symptoms"]] == ["not_converged"], found["symptoms"]
    entry = found["symptoms"][0]
    assert entry["measure"] > 0.02, entry
    assert "NOT CONVERGED: val/loss still improved by" in result.stdout, result.describe()
    check_remedies(run_dir, entry, result.stdout)
    assert entry["remedies"][0]["overrides"] == ["trainer.max_epochs=8"]
    words = shlex.split(entry["remedies"][0]["command"])
    assert [w for w in words if w.startswith("trainer.max_epochs=")] == ["trainer.max_epochs=8"], words


# --- too few optimizer steps ---------------------------------------------------------------------------------------


def test_a_run_of_few_steps_still_improving_is_told_to_train_longer_not_to_raise_its_lr(cli, runs, tmp_path):
    run_dir = runs(*FEW_STEPS)
    metrics = cli.metrics(run_dir)
    assert (metrics["steps"], metrics["batches_per_epoch"], metrics["epochs"]) == (12, 2, 6), metrics
    result = doctor(cli, tmp_path, f"run={run_dir}")
    found = report(tmp_path)
    names = [s["symptom"] for s in found["symptoms"]]
    assert names[0] == "too_few_steps" and not {"stuck", "lr_too_low"} & set(names), found["symptoms"]
    entry = found["symptoms"][0]
    assert (entry["measure"], entry["measure_name"]) == (12, "optimizer steps"), entry
    assert "TOO FEW OPTIMIZER STEPS: 12 steps in 6 epochs (2 per epoch; threshold 1000 steps) and train/loss still " \
           "falling at the last epoch" in result.stdout, result.describe()
    assert "; set aside: loss never left its starting value" in entry["evidence"], entry
    check_remedies(run_dir, entry, result.stdout)
    # 500 epochs of 2 steps; data.min_batches would change nothing under trainer.limit_train_batches=2; a linear model
    assert [r["overrides"] for r in entry["remedies"]] == [["trainer.max_epochs=500"], ["optimizer=lbfgs"]], entry
    assert not proposed_lrs(found)  # nothing asks for a larger lr
    assert printed_remedies(result.stdout)[0].split()[-1] == "trainer.max_epochs=500"

    # the same run as an older dlopt wrote it (no steps in metrics.json): no count, no symptom of it; the stuck loss
    # then asks for a larger lr, as doctor did for every such run before
    older = older_run(run_dir, tmp_path / "older")
    doctor(cli, tmp_path / "cwd_older", f"run={older}")
    found = report(tmp_path / "cwd_older")
    assert [s["symptom"] for s in found["symptoms"]] == ["stuck"], found["symptoms"]
    assert lr_of(found["symptoms"][0]["remedies"][0]) > 1e-3


def test_too_few_steps_is_judged_against_thresholds_few_steps(cli, runs, tmp_path):
    run_dir = runs(*NOT_CONVERGED)  # 12 steps, still improving
    result = doctor(cli, tmp_path / "default", f"run={run_dir}")
    found = report(tmp_path / "default")
    assert [s["symptom"] for s in found["symptoms"]] == ["too_few_steps"], found["symptoms"]
    entry = found["symptoms"][0]
    assert entry["evidence"].startswith("12 steps in 4 epochs (3 per epoch; threshold 1000 steps) and val/loss still ")
    assert "; set aside: not converged" in entry["evidence"], entry
    check_remedies(run_dir, entry, result.stdout)
    assert [r["overrides"] for r in entry["remedies"]] == [["trainer.max_epochs=334"]], entry  # a cnn on digits
    # 12 steps are enough by a threshold of 12: the run is only not converged
    doctor(cli, tmp_path / "enough", f"run={run_dir}", "++diagnostics.thresholds.few_steps=12")
    assert [s["symptom"] for s in report(tmp_path / "enough")["symptoms"]] == ["not_converged"]


# the rule on hand-written records: a linear model on a small table, 2 optimizer steps an epoch for 30 epochs, its
# training loss falling steadily from 1.45 to 1.2 (above ln(3): stuck), val/loss falling with it
TABLE = {"trainer": {"max_epochs": 30}, "optimizer": {"_target_": "torch.optim.Adam", "lr": 1e-3},
         "model": {"_target_": "dlopt.models.Linear"}, "monitor": "val/loss", "mode": "min",
         "data": {"_target_": "dlopt.data.table.csv", "batch_size": 64, "min_batches": 1}}


def table_run(epochs: int = 30, steps: int | None = 60, train_acc: float = 0.26, falling: float = 0.25,
              train: list[float] | None = None, val: list[float] | None = None, **metrics):
    """history.json and metrics.json of such a run: train/loss falling by `falling` at an even pace (or `train`)."""
    train = train or [1.45 - falling * e / (epochs - 1) for e in range(epochs)]
    val = val or [1.48 - 0.25 * e / (epochs - 1) for e in range(epochs)]
    history = [{"epoch": e + 1, "train/loss": train[e], "train/acc": train_acc, "val/loss": val[e], "lr": 1e-3}
               for e in range(epochs)]
    metrics = {"monitor": "val/loss", "mode": "min", "classes": 3, "epochs": epochs, "stopped_early": False,
               "pruned": False, "stop_reason": "trainer.max_epochs=30 reached",
               **({"steps": steps, "batches_per_epoch": steps // epochs, "passes_per_epoch": 1} if steps else {}),
               **metrics}
    return history, metrics


def step_records(ratio: float, epochs: int = 30) -> list[dict]:
    """Per-layer records of one step an epoch with this update/weight ratio."""
    layers = {"features": 1.0, "head": 1.0}
    return [{"kind": "layers", "classes": 3, "weights": []}] + [
        {"kind": "step", "epoch": e, "step": 2 * (e - 1), "grad_norm": layers, "weight_norm": layers,
         "update_ratio": {k: ratio for k in layers}, "total_grad_norm": 1.0, "loss": 1.4} for e in range(1, epochs + 1)]


def diagnosed(history, metrics, config=TABLE, records=(), **thresholds):
    from dlopt.diagnostics import symptoms

    return symptoms.diagnose(list(records), history, metrics, config, {**default_thresholds(), **thresholds})


def test_too_few_steps_names_the_count_and_sets_aside_what_it_explains():
    from dlopt.diagnostics import remedies, symptoms

    history, metrics = table_run()
    findings = diagnosed(history, metrics)
    assert [f.symptom for f in findings] == ["too_few_steps"], [(f.symptom, f.evidence) for f in findings]
    [few] = findings
    assert few.evidence.startswith("60 steps in 30 epochs (2 per epoch; threshold 1000 steps) and train/loss still "
                                   "falling at the last epoch: 1.45 -> 1.2, 52% of that fall in the last 15 epochs"), \
        few.evidence
    assert "set aside: loss never left its starting value" in few.evidence  # no larger lr for it
    assert few.measure == 60 and symptoms.measure("too_few_steps", [], history, metrics, TABLE, default_thresholds()) \
        == 60
    cures = remedies.remedies(few, TABLE, findings)
    assert [r.overrides for r in cures] == [["trainer.max_epochs=500"], ["data.min_batches=34"], ["optimizer=lbfgs"]]
    assert not any(o.startswith("optimizer.lr=") for r in cures for o in r.overrides)
    # a cnn on images: no L-BFGS; under a cap of 2 batches an epoch, no data.min_batches
    cnn = {**TABLE, "model": {"_target_": "dlopt.models.CNN"}, "data": {**TABLE["data"], "_target_": "digits"},
           "trainer": {"max_epochs": 30, "limit_train_batches": 2}}
    assert [r.overrides for r in remedies.remedies(few, cnn, findings)] == [["trainer.max_epochs=500"]]


CONVERGED = [0.3 + 1.15 * math.exp(-e / 3) for e in range(30)]  # 1.45 -> 0.3, all but 0.1% of it in 15 epochs


@pytest.mark.parametrize("change", [
    dict(steps=1000), dict(thresholds={"few_steps": 50}), dict(steps=None),
    dict(stopped_early=True, stop_reason="early stopping: Monitored metric val/loss did not improve"),
    dict(pruned=True, stop_reason="pruned by optuna"),
    dict(stopped_early=True, stop_reason="the training loss became nan at epoch 30"),
    dict(error="CUDA out of memory"), dict(epochs=20, stop_reason="trainer.max_steps=40 reached"),
    dict(config={**TABLE, "optimizer": {"_target_": "torch.optim.LBFGS", "lr": 1}}),
    dict(train=CONVERGED, val=[v + 0.1 for v in CONVERGED]), dict(falling=0.01), dict(train_acc=0.95),
    dict(val=[1.0] * 20 + [1.1] * 10),
], ids=["1000 steps", "threshold 50", "steps not recorded", "stopped early", "pruned", "diverged", "failed",
        "fewer epochs than max_epochs", "L-BFGS", "converged early", "barely moving", "fitted its training split",
        "val/loss rising"])
def test_too_few_steps_is_only_for_a_run_that_ended_still_improving_after_few_steps(change):
    thresholds, config = change.pop("thresholds", {}), change.pop("config", TABLE)
    history, metrics = table_run(**change)
    names = [f.symptom for f in diagnosed(history, metrics, config, **thresholds)]
    assert "too_few_steps" not in names, names
    history, metrics = table_run(steps=999)  # the same run otherwise: too few
    assert [f.symptom for f in diagnosed(history, metrics)] == ["too_few_steps"]


def test_too_few_steps_comes_before_the_learning_rates_symptoms_but_after_an_lr_far_outside_its_range():
    history, metrics = table_run()
    # updates far above the rule of thumb: the lr's symptom after the few steps, its lower lr among its own remedies
    findings = diagnosed(history, metrics, records=step_records(0.3))
    shown = [(f.symptom, f.evidence) for f in findings]
    assert [f.symptom for f in findings] == ["too_few_steps", "lr_too_high"], shown
    # an lr 100x below Adam's usual range explains the stuck loss: it goes first, and the stuck loss stays its effect
    tiny = {**TABLE, "optimizer": {"_target_": "torch.optim.Adam", "lr": 1e-6}}
    findings = diagnosed(history, metrics, tiny)
    assert [f.symptom for f in findings] == ["lr_out_of_range", "too_few_steps", "stuck"], findings
    # updates measured 10x below healthy ones: a larger lr first (it costs no time), then more steps
    findings = diagnosed(history, metrics, records=step_records(5e-4))
    assert [f.symptom for f in findings] == ["lr_too_low", "too_few_steps"], [(f.symptom, f.evidence) for f in findings]
    assert "set aside: loss never left its starting value" in findings[1].evidence


def test_an_lbfgs_run_that_converged_and_stopped_early_is_healthy():
    """optimizer=lbfgs, the remedy for a linear model: its line search sizes each step, so the update ratio says
    nothing of its lr (0 once converged), and a plateau after a few epochs is its convergence, not an eager stop."""
    lbfgs = {**TABLE, "optimizer": {"_target_": "torch.optim.LBFGS", "lr": 1.0}}
    history, metrics = table_run(epochs=12, steps=12, train_acc=1.0, train=[0.2] + [0.01] * 11, val=[0.1] + [0.02] * 11,
                                 stopped_early=True, stop_reason="early stopping: Monitored metric val/loss did not "
                                 "improve in the last 10 records.")
    records = step_records(0.0, epochs=12)
    assert diagnosed(history, metrics, lbfgs, records) == []
    adam = [f.symptom for f in diagnosed(history, metrics, TABLE, records)]  # the same records of Adam
    assert adam == ["lr_too_low", "eager_stopping"], adam


# --- issue 24: one story per report ----------------------------------------------------------------------------------


def proposed_lrs(found: dict) -> set[float]:
    """Every learning rate the report proposes, in any remedy of any symptom."""
    return {lr_of(r) for s in found["symptoms"] for r in s["remedies"]
            if any(o.startswith("optimizer.lr=") for o in r["overrides"])}


def printed_remedies(stdout: str) -> list[str]:
    """The commands printed under "remedy N", in order."""
    lines = stdout.splitlines()
    return [lines[i + 1].strip() for i, line in enumerate(lines) if line.strip().startswith("remedy ")]


def test_one_learning_rate_per_report_whichever_symptom_proposes_it(cli, runs, tmp_path):
    run_dir = runs(*SGD_LR5)
    result = doctor(cli, tmp_path, f"run={run_dir}")
    found = report(tmp_path)
    names = [s["symptom"] for s in found["symptoms"]]
    assert {"lr_too_high", "dead_units", "stuck"} <= set(names), names  # each proposes an lr (were 0.05, 0.5, 50)
    [lr] = proposed_lrs(found)
    assert lr < 5, found["symptoms"]
    for entry in found["symptoms"]:
        check_remedies(run_dir, entry, result.stdout)
        for remedy in entry["remedies"]:
            if any(o.startswith("optimizer.lr=") for o in remedy["overrides"]):
                assert remedy["why"].startswith("smaller steps") and "larger" not in remedy["why"], remedy
                assert not any(o.startswith("trainer.max_epochs=") for o in remedy["overrides"]), remedy  # wrecked
    printed = {c.split("optimizer.lr=")[1].split()[0] for c in printed_remedies(result.stdout)}
    assert printed == {"5", f"{lr:g}"}, printed  # the run's own lr where a remedy leaves it, else the one proposed


def test_updates_far_below_healthy_ones_name_the_learning_rate_before_a_bigger_model(cli, runs, tmp_path):
    run_dir = runs(*SLOW_SGD)
    assert strict_json(run_dir / "history.json")[-1]["train/acc"] < 0.7  # underfitting by the curves
    result = doctor(cli, tmp_path, f"run={run_dir}")
    found = report(tmp_path)
    first = found["symptoms"][0]
    # above update_low (no "lr too low" before issue 24), below update_slow
    assert first["symptom"] == "lr_too_low" and 2e-4 <= first["measure"] < 1e-3, found["symptoms"]
    assert "LEARNING RATE TOO LOW: update/weight ratio at most" in result.stdout, result.describe()
    assert "underfitting" not in [s["symptom"] for s in found["symptoms"]]  # low train/acc is the lr's doing
    check_remedies(run_dir, first, result.stdout)
    assert 5e-4 < lr_of(first["remedies"][0]) <= 0.5, first["remedies"]  # larger steps, within SGD's usual range
    assert proposed_lrs(found) == {lr_of(first["remedies"][0])}
    commands = printed_remedies(result.stdout)
    assert f"optimizer.lr={lr_of(first['remedies'][0]):g}" in commands[0].split(), commands
    assert not any("model.width=" in c or "model.depth=" in c for c in commands), commands


def test_an_adaptive_optimizer_far_above_its_usual_range_is_the_root_cause(cli, runs, tmp_path):
    run_dir = runs(*ADAM_HUGE)
    result = doctor(cli, tmp_path, f"run={run_dir}")
    found = report(tmp_path)
    first = found["symptoms"][0]
    assert first["symptom"] == "lr_out_of_range" and first["measure"] == pytest.approx(1 / 3e-3), found["symptoms"]
    assert "LEARNING RATE FAR ABOVE ADAM'S USUAL RANGE: optimizer.lr=1 is 333x above the top of Adam's usual " \
           "0.0001 to 0.003" in result.stdout, result.describe()
    assert "dead_units" in [s["symptom"] for s in found["symptoms"]]  # what it did; a leaky ReLU was remedy 1
    check_remedies(run_dir, first, result.stdout)
    [lr] = proposed_lrs(found)
    assert first["remedies"][0]["overrides"] == [f"optimizer.lr={lr:g}"] and 1e-4 <= lr <= 3e-3, first["remedies"]
    assert symptom(found, "dead_units")["remedies"][0] == first["remedies"][0]  # the lr before another activation
    assert f"optimizer.lr={lr:g}" in printed_remedies(result.stdout)[0].split()


def test_a_lower_learning_rate_for_a_run_that_learned_needs_more_epochs_and_says_so(cli, runs, tmp_path):
    run_dir = runs(*SGD_HOT)
    result = doctor(cli, tmp_path, f"run={run_dir}")
    found = report(tmp_path)
    assert "stuck" not in [s["symptom"] for s in found["symptoms"]]  # it learned
    entry = symptom(found, "lr_too_high")
    first = entry["remedies"][0]
    assert lr_of(first) < 0.5 and "trainer.max_epochs=6" in first["overrides"], first
    assert first["why"].endswith("needs more epochs: trainer.max_epochs=6"), first
    check_remedies(run_dir, entry, result.stdout)
    assert "needs more epochs: trainer.max_epochs=6):" in result.stdout, result.describe()


def default_thresholds() -> dict:
    from dlopt.apps import config_dir

    return yaml.safe_load((Path(config_dir()) / "diagnostics" / "default.yaml").read_text())["thresholds"]


@pytest.mark.parametrize("kept, covered", [((12,), "epoch 12"), ((), "no epoch")], ids=["last epoch", "header only"])
def test_records_an_older_resume_cut_are_not_judged_the_curves_are(cli, runs, tmp_path, kept, covered):
    from dlopt.diagnostics import symptoms

    whole = runs(*COSINE)
    cut = copy_run(whole, tmp_path / "cut")
    lines = (cut / "diagnostics.jsonl").read_text().splitlines()
    (cut / "diagnostics.jsonl").write_text("\n".join([lines[0], *(line for line in lines[1:]
                                                                  if json.loads(line)["epoch"] in kept)]) + "\n")
    if kept:  # judged, the last epoch's tiny updates (the cosine took the lr near zero) would say "lr too low"
        tail = symptoms.read_records(cut / "diagnostics.jsonl")
        judged = symptoms.layer_findings(symptoms.per_epoch(tail), default_thresholds())
        assert [f.symptom for f in judged] == ["lr_too_low"], judged
    result = doctor(cli, tmp_path / "cwd", f"run={cut}")
    line = f"  per-layer records cover {covered} of 1-12 (an older dlopt kept only those after a resume): judged from " \
           "the curves alone"
    assert line in result.stdout.splitlines(), result.describe()
    found = report(tmp_path / "cwd")
    assert found["recorded_layers"] is False and found["partial_records"] in line, found
    bare = copy_run(whole, tmp_path / "bare")
    (bare / "diagnostics.jsonl").unlink()
    doctor(cli, tmp_path / "cwd_bare", f"run={bare}")
    assert [s["symptom"] for s in found["symptoms"]] == [s["symptom"] for s in report(tmp_path / "cwd_bare")["symptoms"]]
    assert "lr_too_low" not in [s["symptom"] for s in found["symptoms"]]


# --- 8. a diverged run, a run without records, a sweep --------------------------------------------------------------


def test_a_run_stopped_on_a_nan_loss_is_diagnosed_from_what_it_recorded(cli, runs, tmp_path):
    run_dir = runs(*NAN)
    metrics = cli.metrics(run_dir)
    assert "the training loss became nan at epoch 2" in metrics["stop_reason"], metrics
    result = doctor(cli, tmp_path, f"run={run_dir}")
    assert "run ended: the training loss became nan at epoch 2" in result.stdout, result.describe()
    found = report(tmp_path)
    assert found["recorded_layers"] is True
    entry = symptom(found, "lr_too_high")
    # the most fundamental first: lr 50 is 100x the top of SGD's usual range, then what it did
    assert [s["symptom"] for s in found["symptoms"]][:2] == ["lr_out_of_range", "lr_too_high"], found["symptoms"]
    assert "stopped: the training loss became nan" in entry["evidence"], entry  # with the update ratio, if recorded
    check_remedies(run_dir, entry, result.stdout)
    assert 1e-3 <= lr_of(entry["remedies"][0]) <= 0.5, entry["remedies"]  # SGD's usual range
    assert proposed_lrs(found) == {lr_of(entry["remedies"][0])}


def test_a_run_without_records_is_diagnosed_from_its_curves(cli, runs, tmp_path):
    run_dir = runs(*HEALTHY, "diagnostics=none")
    assert not (run_dir / "diagnostics.jsonl").exists()
    result = doctor(cli, tmp_path, f"run={run_dir}")
    assert "no per-layer records" in result.stdout and "healthy: no symptom found" in result.stdout, result.describe()
    found = report(tmp_path)
    assert found["healthy"] is True and found["recorded_layers"] is False


def test_a_sweep_folder_gets_one_line_per_run_and_one_report_of_them_all(cli, sweep, tmp_path):
    result = doctor(cli, tmp_path, f"run={sweep}")  # the sweep's folder byte for byte as it was
    lines = result.stdout.splitlines()
    found = report(tmp_path)
    assert found["sweep"] == str(sweep) and [r["run"] for r in found["runs"]] == [str(sweep / "0"), str(sweep / "1")]
    for run, entry in zip(("0", "1"), found["runs"]):
        [line] = [line for line in lines if line.startswith(f"{run}: ")]
        assert f"seed={run}" in line and "model=mlp" in line, line
        assert isinstance(entry["healthy"], bool)
        listed = ", ".join(s["title"] for s in entry["symptoms"]) or "healthy"
        assert line.startswith(f"{run}: {listed}  ["), (line, listed)
    assert f"2 runs in {sweep}" in result.stdout
    assert not list(sweep.rglob("doctor.json"))


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

    assert sorted(p.name for p in folder.iterdir() if p.name == "doctor.json") == ["doctor.json"]
    [tried] = report(tmp_path)["tried"]  # beside the runs it tried; the run it read byte for byte as it was
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
    run_dir = older_run(runs(*NOT_CONVERGED), tmp_path / "older")  # not converged: twice the epochs
    doctor(cli, tmp_path, f"run={run_dir}", "try=true", "remedies=1")
    [folder] = [d for d in (tmp_path / "outputs" / "doctor").glob("*/*") if d.is_dir()]
    [tried] = report(tmp_path)["tried"]
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
def test_bad_doctor_input_is_one_line_and_writes_nothing(in_process, tmp_path, target, sweep, args, needles):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not a run\n")
    sweep_copy = copy_run(sweep, tmp_path / "sweep")
    names = {"tmp": tmp_path, "run": target, "sweep": sweep_copy}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = in_process.run("doctor", *(a.format(**names) for a in args), cwd=cwd)
    one_line(result, *(n.format(**names) for n in needles))
    nothing_written(cwd, target, sweep_copy, tmp_path / "empty", tmp_path / "junk")


def test_try_on_a_healthy_run_trains_nothing(in_process, tmp_path, target):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = in_process.run("doctor", f"run={target}", "try=true", cwd=cwd)
    assert result.returncode == 2 and "Traceback" not in result.output, result.describe()
    errors = [line for line in result.output.splitlines() if line.startswith("dlopt doctor: ")]
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
def test_a_corrupt_run_file_is_one_line_naming_it(in_process, tmp_path, target, case):
    name, content, message = CORRUPT[case]
    path = target / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = in_process.run("doctor", f"run={target}", cwd=cwd)
    one_line(result, f"{target / name}", message)
    nothing_written(cwd, target)


WRONG_TYPES = {  # file -> valid JSON whose values have the wrong type
    "metrics.json": '{"classes": "ten", "monitor": "val/loss", "mode": "min"}',
    "diagnostics.jsonl": '{"kind": "step", "epoch": 0, "grad_norm": 5}\n',
}


@pytest.mark.parametrize("name", list(WRONG_TYPES))
def test_a_run_file_with_values_of_the_wrong_type_is_one_line_naming_it(in_process, tmp_path, target, name):
    (target / name).write_text(WRONG_TYPES[name])
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = in_process.run("doctor", f"run={target}", cwd=cwd)
    one_line(result, str(target / name))
    nothing_written(cwd, target)
