"""`dlopt tune-lr`: Lightning's learning-rate range test on the train config, run for real on digits.

Checks the plot, the strict JSON, the TensorBoard figure and the suggested command it leaves, that
Lightning's temporary checkpoint and the config's checkpoint callbacks leave nothing behind, that a
diverging loss still gives a plot and one line, and that bad lr_find values fail in one line.

It plots and saves true losses, not Lightning's smoothing artifact: Lightning's range test divides the first
step's moving average by 1 - 0.98^2 instead of 1 - 0.98, so its curve starts at half a fresh network's loss
(~1.3 on digits, where ln(10) = 2.3) and seems to rise (Lightning-AI/pytorch-lightning#14167). dlopt records
every step's loss itself: lr_find.json holds them (`raw_loss`, one per step) and their correctly bias-corrected
moving average (`loss`), which the suggestion and the stop reason use.
"""

from __future__ import annotations

import json
import math
import re
import textwrap

import pytest

from dlopt.apps.tune_lr import train_command
from dlopt.training.lr_find import steepest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUICK = ("lr_find.num_training=30", "trainer.limit_val_batches=1")
RUN_FILES = {".hydra", "tune_lr.log", "tensorboard", "lr_find.png", "lr_find.json"}


def strict_json(path) -> dict:
    def reject(constant):
        raise ValueError(f"{path} holds the non-JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


def assert_nothing_stray(cwd, run_dir):
    assert {p.name for p in run_dir.iterdir()} <= RUN_FILES, sorted(p.name for p in run_dir.iterdir())
    assert [p.name for p in cwd.iterdir()] == ["outputs"]
    assert not [p for p in cwd.rglob("*") if p.suffix == ".ckpt" or "lr_find_temp" in p.name or p.name == "checkpoints"]


def tune(cli, cwd, *overrides: str):
    result = cli.ok("tune-lr", *QUICK, *overrides, cwd=cwd)
    (run_dir,) = cli.run_dirs(cwd, "tune_lr")
    return result, json.loads((run_dir / "lr_find.json").read_text())


def moving_average(raw: list[float], beta: float) -> list[float]:
    """The bias-corrected moving average: at each step the weighted mean of the losses so far, weights beta^age."""
    return [sum(beta ** (k - i) * x for i, x in enumerate(raw[:k + 1])) / sum(beta ** a for a in range(k + 1))
            for k in range(len(raw))]


@pytest.fixture(scope="module")
def tuned(cli, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("tune")
    result = cli.ok("tune-lr", *QUICK, "optimizer=sgd", cwd=cwd)
    (run_dir,) = cli.run_dirs(cwd, "tune_lr")
    return cwd, run_dir, result


def test_range_test_leaves_plot_json_and_suggestion(tuned):
    cwd, run_dir, result = tuned
    assert (run_dir / "lr_find.png").read_bytes().startswith(PNG_MAGIC)
    found = strict_json(run_dir / "lr_find.json")
    assert (found["min_lr"], found["max_lr"], found["num_training"]) == (1e-6, 1.0, 30)
    assert found["schedule"] == "exponential"
    assert len(found["lr"]) == len(found["loss"]) == found["steps"] == 30 and not found["diverged"]
    assert found["lr"][0] == pytest.approx(1e-6) and found["lr"] == sorted(found["lr"])
    assert all(math.isfinite(x) for x in found["loss"])
    lr = found["suggested_lr"]
    assert math.isfinite(lr) and 1e-6 <= lr <= 1.0 and lr in found["lr"]
    # the command to train with it keeps the train overrides and drops the lr_find ones
    train = f"dlopt train trainer.limit_val_batches=1 optimizer=sgd optimizer.lr={lr:.2g}"
    assert f"suggested optimizer.lr={lr:.2g}  ({train})" in result.output, result.describe()
    assert_nothing_stray(cwd, run_dir)


def test_range_test_plot_is_a_tensorboard_figure(tuned):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images = []
    for path in sorted((tuned[1] / "tensorboard").glob("events.out.tfevents.*")):
        events = EventAccumulator(str(path))
        events.Reload()
        images += events.Tags()["images"]
    assert images == ["lr_find"]


def test_loss_that_diverges_at_once_still_gives_the_plot(cli, tmp_path):
    # sgd at 1e30 without normalization: a NaN loss at the second step
    result = cli.ok("tune-lr", *QUICK, "model=mlp", "model.norm=none", "optimizer=sgd",
                    "lr_find.min_lr=1e30", "lr_find.max_lr=1e39", cwd=tmp_path)
    lines = [line for line in result.output.splitlines() if "no lr suggested" in line]
    assert len(lines) == 1 and "the loss diverged after 2 of 30 steps" in lines[0], result.describe()
    assert "lower lr_find.min_lr" in lines[0]
    (run_dir,) = cli.run_dirs(tmp_path, "tune_lr")
    assert (run_dir / "lr_find.png").read_bytes().startswith(PNG_MAGIC)
    found = strict_json(run_dir / "lr_find.json")
    assert found["suggested_lr"] is None and found["diverged"] and found["loss"][-1] is None
    assert_nothing_stray(tmp_path, run_dir)


@pytest.mark.parametrize("override, needle", [
    ("lr_find.min_lr=1", "lr_find.min_lr=1 is not below lr_find.max_lr=1.0"),
    ("lr_find.min_lr=0", "lr_find.min_lr=0 is not valid: expected a number > 0"),
    ("lr_find.max_lr=-1", "lr_find.max_lr=-1 is not valid: expected a number > 0"),
    ("lr_find.num_training=1", "lr_find.num_training=1 is not valid: expected an integer >= 2"),
    ("lr_find.num_training=2.5", "lr_find.num_training=2.5 is not valid: expected an integer >= 2"),
    ("lr_find.schedule=cosine", "lr_find.schedule=cosine is not valid; choose one of exponential, linear"),
    ("trainer.fast_dev_run=true", "trainer.fast_dev_run=True makes Lightning skip the range test"),
])
def test_bad_input_is_one_line_and_leaves_no_folder(in_process, tmp_path, override, needle):
    result = in_process.run("tune-lr", override, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.output, result.describe()
    assert len([line for line in result.output.splitlines() if needle in line]) == 1, result.describe()
    assert not [p for p in (tmp_path / "outputs").rglob("*") if not p.is_dir()], result.describe()
    assert not list((tmp_path / "outputs").rglob(".hydra"))


def test_help_lists_tune_lr_and_its_config_imports_no_torch(cli, tmp_path):
    result = cli.ok("--help", cwd=tmp_path, timeout=60)
    assert re.search(r"^\s+tune-lr\s", result.stdout, re.M) and "dlopt tune-lr model=resnet" in result.stdout
    code = textwrap.dedent("""
        import sys
        from dlopt.cli import main
        for argv in (["tune-lr", "--help"], ["tune-lr", "--cfg", "job", "model=resnet", "lr_find.schedule=linear"]):
            try:
                code = main(argv)
            except SystemExit as exit:  # Hydra's --help exits
                code = exit.code
            assert not code, argv
        print("HEAVY=" + ",".join(m for m in ("torch", "lightning") if m in sys.modules))
    """)
    proc = cli.python(code, cwd=tmp_path)
    assert proc.returncode == 0 and "HEAVY=\n" in proc.stdout, proc.describe()
    assert "dlopt tune-lr: the train config plus lr_find" in proc.stdout
    assert "schedule: linear" in proc.stdout and "_target_: dlopt.models.ResNet" in proc.stdout
    assert not (tmp_path / "outputs").exists()


# true losses, not Lightning's smoothing artifact


@pytest.fixture(scope="module")
def fresh(cli, tmp_path_factory):
    return tune(cli, tmp_path_factory.mktemp("fresh"))


def test_smoothed_loss_starts_at_a_fresh_networks_loss(fresh):
    result, found = fresh
    assert 1.5 < found["loss"][0] < 3.5, found["loss"][:5]  # ln(10) = 2.3; Lightning's own curve starts near 1.3
    assert found["loss"][0] == found["raw_loss"][0]  # the average of one loss is that loss
    assert "range test: all 30 steps ran" in result.output, result.describe()


def test_raw_losses_are_saved_one_per_step_and_smoothed_is_their_moving_average(fresh):
    _, found = fresh
    raw, smoothed = found["raw_loss"], found["loss"]
    assert len(raw) == len(smoothed) == len(found["lr"]) == found["steps"] == 30
    assert all(isinstance(x, float) and math.isfinite(x) for x in raw + smoothed)
    assert len(set(raw)) > 20  # one loss per step, not a repeated value
    assert smoothed == pytest.approx(moving_average(raw, found["smoothing"]), rel=1e-9)
    assert found["smoothing"] == 0.98
    assert found["suggested_lr"] in found["lr"]


def test_divergence_is_judged_on_the_true_smoothed_loss(cli, tmp_path):
    result, found = tune(cli, tmp_path, "optimizer=sgd", "lr_find.min_lr=0.01", "lr_find.max_lr=1e4")
    smoothed, steps = found["loss"], found["steps"]
    assert found["diverged"] and steps < 30 and len(found["raw_loss"]) == steps
    # stopped at the first step whose smoothed loss exceeds 4 x the lowest so far, and not before
    assert smoothed[-1] > 4 * min(smoothed) and all(x <= 4 * min(smoothed[:k + 1]) for k, x in enumerate(smoothed[:-1]))
    line = next(line for line in result.output.splitlines() if "the loss diverged" in line)
    numbers = re.search(rf"after {steps} of 30 steps \(the smoothed loss ([\d.]+) > 4 x its lowest ([\d.]+)\)", line)
    assert numbers, result.describe()
    assert float(numbers[1]) == pytest.approx(smoothed[-1], rel=1e-2)
    assert float(numbers[2]) == pytest.approx(min(smoothed), rel=1e-2)


def test_data_that_runs_out_is_not_called_divergence(cli, tmp_path):
    result, found = tune(cli, tmp_path, "trainer.max_epochs=1", "trainer.limit_train_batches=5")
    assert not found["diverged"] and found["steps"] == len(found["raw_loss"]) == 5
    assert "the data ran out after 5 of 30 steps" in result.output, result.describe()


def test_steepest_fall_is_measured_on_the_log_lr_axis():
    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
    # the loss falls by one unit per decade from 1e-4 to 1e-2 and faster (two per decade) from 1e-2 to 1e-1
    losses = [3.0 - max(0.0, min(math.log10(lr), -2) + 4) - 2 * max(0.0, min(math.log10(lr), -1) + 2) for lr in lrs]
    best = steepest(lrs, losses, "exponential")
    assert 1e-2 < lrs[best] < 1e-1
    assert steepest(lrs, [float("nan")] * 100, "exponential") is None
    assert steepest(lrs[:12], losses[:12], "exponential") is None  # the first 10 and the last are skipped


def test_train_command_drops_lr_find_and_lr_overrides():
    overrides = ["model=resnet", "lr_find.max_lr=0.1", "optimizer.lr=3", "+lr_find.x=1", "data.classes=[0,1]"]
    assert train_command(overrides) == "dlopt train model=resnet 'data.classes=[0,1]'"
