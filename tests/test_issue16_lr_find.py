"""Issue 16 item 9: `dlopt tune-lr` plots and saves true losses, not Lightning's smoothing artifact.

Lightning's range test divides the first step's moving average by 1 - 0.98^2 instead of 1 - 0.98, so
its curve starts at half a fresh network's loss (~1.3 on digits, where ln(10) = 2.3) and seems to
rise (Lightning-AI/pytorch-lightning#14167). dlopt records every step's loss itself: lr_find.json
holds them (`raw_loss`, one per step) and their correctly bias-corrected moving average (`loss`),
which the suggestion and the stop reason use. Each test runs the real command on digits.
"""

from __future__ import annotations

import json
import math
import re

import pytest

QUICK = ("lr_find.num_training=30", "trainer.limit_val_batches=1")


def tune(cli, cwd, *overrides: str):
    result = cli.ok("tune-lr", *QUICK, *overrides, cwd=cwd)
    (run_dir,) = cli.run_dirs(cwd, "tune_lr")
    return result, json.loads((run_dir / "lr_find.json").read_text())


def moving_average(raw: list[float], beta: float) -> list[float]:
    """The bias-corrected moving average: at each step the weighted mean of the losses so far, weights beta^age."""
    return [sum(beta ** (k - i) * x for i, x in enumerate(raw[:k + 1])) / sum(beta ** a for a in range(k + 1))
            for k in range(len(raw))]


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
