"""The pictures dlopt writes (issue 28): every line or marker labelled or explained in a legend that sits outside
the data, integer axes with integer ticks, robust y limits where one spike would flatten a curve.

Each test draws a picture in-process from synthetic data and reads the matplotlib figure: the y limits, the
legend's box against the axes' box and the data points in display coordinates (after fig.canvas.draw()), the
tick values."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest
import torch

from dlopt.explain.features import Features
from dlopt.explain.plot import attributions_figure, faithfulness_figure, importance_figure
from dlopt.runs import compare, groups
from dlopt.runs.listing import Run
from dlopt.training import lr_find, report
from dlopt.training.report import pyplot


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    pyplot().close("all")


def legend_boxes(fig) -> list:
    fig.canvas.draw()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    assert legends, "no legend"
    return [legend.get_window_extent() for legend in legends]


def assert_legends_outside_the_axes(fig, axes=None) -> None:
    """No legend overlaps any axes' box (so it covers no data point, wherever the data lie)."""
    boxes = legend_boxes(fig)
    for ax in axes or fig.axes:
        frame = ax.get_window_extent()
        for box in boxes:
            assert not box.overlaps(frame), (box, frame, ax.get_title())


def labelled(ax) -> dict[str, object]:
    return {line.get_label(): line for line in ax.lines if not line.get_label().startswith("_")}


def assert_every_line_labelled(ax) -> None:
    unlabelled = [line for line in ax.lines if line.get_label().startswith("_")]
    assert not unlabelled, [line.get_label() for line in unlabelled]


def assert_integer_ticks(axis) -> None:
    low, high = sorted(axis.get_view_interval())
    ticks = [t for t in axis.get_ticklocs() if low - 1e-9 <= t <= high + 1e-9]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


# --- lr_find.png --------------------------------------------------------------------------------------------------


def steps_of(losses: list[float]) -> lr_find.StepLosses:
    """StepLosses as the range test fills them: the bias-corrected moving average, stopped at divergence."""
    steps, average = lr_find.StepLosses(), 0.0
    for loss in losses:
        average = lr_find.BETA * average + (1 - lr_find.BETA) * loss
        steps.raw.append(loss)
        steps.smoothed.append(average / (1 - lr_find.BETA ** len(steps.raw)))
        if not math.isfinite(steps.smoothed[-1]) or steps.smoothed[-1] > lr_find.EARLY_STOP * min(steps.smoothed):
            steps.diverged = True
            break
    return steps


def range_test(spike: float | None = None, n: int = 100, seed: int = 0):
    """A loss falling from 2.5 to 0.3 with noise, rising again at the largest lrs; `spike` at step 40."""
    rng = random.Random(seed)
    losses = [max(0.05, 2.5 - 2.2 * min(i / 60, 1) + max(0, i - 85) * 0.05 + rng.gauss(0, 0.1)) for i in range(n)]
    if spike is not None:
        losses[40] = spike
    steps = steps_of(losses)
    lrs = [1e-6 * 10 ** (6 * i / (n - 1)) for i in range(len(steps.raw))]
    return lrs, steps, lr_find.steepest(lrs, steps.smoothed, "exponential")


def test_lr_find_one_spike_does_not_set_the_y_axis_and_is_marked_at_its_edge():
    lrs, steps, best = range_test(spike=16.0)
    fig = lr_find._figure(lrs, steps, best, "exponential")
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert max(steps.smoothed) <= high < 4.0, (low, high)  # the curve lives in 0.3-2.6; the spike would set 16
    assert low <= min(y for y in steps.raw)
    marks = {label: line for label, line in labelled(ax).items() if "above the axis" in label}
    assert list(marks) == ["1 loss above the axis (up to 16), at the top edge"]
    (mark,) = marks.values()
    assert list(mark.get_ydata()) == [high] and list(mark.get_xdata()) == [lrs[40]]
    assert "y axis clipped" in ax.get_title()
    assert_every_line_labelled(ax)
    assert_legends_outside_the_axes(fig)


def test_lr_find_without_a_spike_shows_every_loss_and_says_nothing_is_clipped():
    lrs, steps, best = range_test()
    fig = lr_find._figure(lrs, steps, best, "exponential")
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert low <= min(steps.raw) and max(steps.raw) <= high
    assert not [label for label in labelled(ax) if "axis" in label] and "clipped" not in ax.get_title()
    assert f"suggested {lrs[best]:.2g}" in labelled(ax)


def test_lr_find_limits_come_from_the_smoothed_loss_and_the_steps_noise():
    lrs, steps, _ = range_test(spike=16.0)
    assert not steps.diverged
    raw = steps.raw
    medians = [statistics.median(raw[max(0, i - 4):i + 5]) for i in range(len(raw))]  # WINDOW = 9
    noise = statistics.median(abs(y - m) for y, m in zip(raw, medians))
    low, high = min(raw), max(steps.smoothed) + 3 * noise
    pad = 0.05 * (high - low)
    assert lr_find.loss_limits(raw, steps.smoothed, False) == pytest.approx((low - pad, high + pad))
    assert noise < 0.15  # the spike does not count as noise
    # the same losses without the spike: nearly the same axis
    calm = steps_of([*raw[:40], raw[39], *raw[41:]])
    assert lr_find.loss_limits(calm.raw, calm.smoothed, calm.diverged)[1] == pytest.approx(high + pad, rel=0.1)


def test_lr_find_divergence_keeps_the_threshold_in_view_and_marks_the_runaway_losses():
    losses = [2.3 - 0.02 * i for i in range(60)] + [1.1 * 1.6 ** i for i in range(1, 30)]
    steps = steps_of(losses)
    assert steps.diverged
    lrs = [1e-6 * 1.15 ** i for i in range(len(steps.raw))]
    fig = lr_find._figure(lrs, steps, lr_find.steepest(lrs, steps.smoothed, "exponential"), "exponential")
    ax = fig.axes[0]
    threshold = lr_find.EARLY_STOP * min(steps.smoothed)
    low, high = ax.get_ylim()
    assert low < threshold < high < max(steps.raw)
    assert any(label.startswith("divergence: 4 x") for label in labelled(ax))
    assert any("above the axis" in label for label in labelled(ax))
    assert_legends_outside_the_axes(fig)


def test_lr_find_a_loss_that_is_not_a_number_at_the_second_step_is_marked():
    steps = steps_of([2.3, math.nan])
    fig = lr_find._figure([1e30, 2e30], steps, None, "exponential")
    ax = fig.axes[0]
    assert "1 loss not a number, at the top edge" in labelled(ax)
    low, high = ax.get_ylim()
    assert low < 2.3 < high and math.isfinite(high)
    assert ax.get_title() == "LR range test: no suggestion"


# --- axes.png (dlopt runs by=...) ---------------------------------------------------------------------------------


def run(folder, status: str, objective, **knobs) -> Run:
    """A run as dlopt.runs.listing reads it, its knobs as overrides (read before its config, which it lacks)."""
    metrics = {} if objective is None else {"objective": objective, "monitor": "val/loss"}
    return Run(folder, "train", status, overrides=[f"{k.replace('_', '.')}={v}" for k, v in knobs.items()],
               metrics=metrics, _choices={})


@pytest.fixture
def grouped(tmp_path) -> list[Run]:
    rows = [("adam", 2, 0.30, "done"), ("adam", 2, 0.32, "done"), ("adam", 3, 0.28, "done"), ("sgd", 2, 0.45, "done"),
            ("sgd", 3, 0.41, "done"), ("sgd", 3, 0.60, "pruned"), ("rmsprop", 2, None, "failed")]
    # the adam group's mean marker sits where the old legend (upper right / best) was drawn
    return [run(tmp_path / str(i), status, objective, optimizer=optimizer, model_depth=depth)
            for i, (optimizer, depth, objective, status) in enumerate(rows)]


def test_axes_png_legend_is_below_the_plots_and_covers_no_marker(grouped):
    fig = groups.axes_figure(grouped, ["optimizer", "model.depth"], "objective")
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["done (5)", "mean", "pruned (1)",
                                                                   "failed or unfinished (1)"]
    assert_legends_outside_the_axes(fig)
    (box,) = legend_boxes(fig)
    for ax in fig.axes:
        for line in ax.lines:  # every marker, the crosses drawn on the axis included
            points = line.get_transform().transform(line.get_xydata())
            assert not any(box.contains(x, y) for x, y in points), line.get_label()


@pytest.mark.parametrize("depths", [(2, 3), (3,), (2, 4, 8)])
def test_axes_png_an_integer_knob_has_integer_ticks(tmp_path, depths):
    runs = [run(tmp_path / str(i), "done", 0.3 + 0.01 * i, model_depth=d) for i, d in enumerate(depths * 2)]
    fig = groups.axes_figure(runs, ["model.depth"], "objective")
    fig.canvas.draw()
    assert_integer_ticks(fig.axes[0].xaxis)
    low, high = fig.axes[0].get_xlim()
    assert low < min(depths) and max(depths) < high


# --- compare.png and curves.png -----------------------------------------------------------------------------------


def test_compare_png_names_each_run_once_below_the_plots_in_one_colour(tmp_path):
    runs = []
    for i in range(3):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        (folder / "history.json").write_text(json.dumps(
            [{"epoch": e, "val/loss": 1 / (e + i), "val/acc": 1 - 1 / (e + i + 1)} for e in (1, 2)]))
        runs.append(run(folder, "done", 0.3, optimizer_lr=f"0.00{i + 1}", model="cnn"))
    fig, missing = compare.compare_figure(runs)
    assert missing == []
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [f"run{i}: optimizer.lr=0.00{i + 1}" for i in range(3)]
    assert_legends_outside_the_axes(fig)
    loss, acc = fig.axes
    assert [line.get_color() for line in loss.lines] == [line.get_color() for line in acc.lines]
    for ax in fig.axes:
        assert_integer_ticks(ax.xaxis)  # two epochs: where MaxNLocator(integer=True) gives 1.25, 1.5, ...
        assert_every_line_labelled(ax)


@pytest.mark.parametrize("epochs", [1, 2, 7])
def test_curves_png_legend_is_below_the_panels_and_epochs_are_whole(epochs):
    history = [{"epoch": e, "train/loss": 2 / e, "val/loss": 2.1 / e, "train/acc": 1 - 1 / (e + 1),
                "val/acc": 0.9 - 1 / (e + 2)} for e in range(1, epochs + 1)]
    fig = report.curves_figure(history, best=epochs, monitor="val/loss", tested={"test/loss": 0.7, "test/acc": 0.81},
                               tested_epoch=epochs)
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "train", "val", f"best epoch {epochs} (val/loss)", f"test (epoch {epochs}'s weights)"]
    assert [ax.get_title() for ax in fig.axes] == ["loss (test 0.7)", "acc (test 0.81)"]
    assert_legends_outside_the_axes(fig)
    for ax in fig.axes:
        assert_integer_ticks(ax.xaxis)
        assert_every_line_labelled(ax)


# --- faithfulness.png, attributions.png and augmentations.png of signals ----------------------------------------


def test_faithfulness_png_legend_is_below_the_curves_and_the_band_is_explained():
    fractions = torch.linspace(0, 1, 11)
    falling = torch.linspace(0.9, 0.1, 11).repeat(4, 1)  # curves over the whole axes: any legend inside covers one
    fig = faithfulness_figure(fractions, {"saliency": falling * 0.8, "integrated_gradients": falling * 0.9},
                              falling, {"saliency": 0.3, "integrated_gradients": 0.35, "random": 0.5})
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "saliency (AUC 0.300)", "integrated_gradients (AUC 0.350)", "random (AUC 0.500)"]
    assert fig.axes[0].get_legend() is None and "band: ± 1 standard error" in fig.axes[0].get_title()
    assert_legends_outside_the_axes(fig)


@pytest.mark.parametrize("channels", [1, 3])
def test_the_lines_of_a_signal_are_explained_in_the_title_by_colour(channels):
    signals = torch.rand(3, channels, 40)
    fig = report.plot_samples([("original", signals, list("abc"))], "training samples")
    title = fig._suptitle.get_text()
    expected = "line: the signal" if channels == 1 else "lines: channels 0 blue, 1 orange, 2 green"
    assert title == f"training samples; {expected}"
    colours = ["tab:blue", "tab:orange", "tab:green"][:channels]
    assert all([line.get_color() for line in ax.lines] == colours for ax in fig.axes)

    feats = Features("signal", torch.arange(40).repeat(channels, 1).unsqueeze(0), [f"t{i}" for i in range(40)])
    fig = attributions_figure(signals, list("abc"), {"saliency": torch.randn(3, 40)}, feats)
    assert expected in " ".join(fig._suptitle.get_text().split())  # wrapped to the width
    assert all([line.get_color() for line in ax.lines] == colours for ax in fig.axes)


# --- diagnostics.png ----------------------------------------------------------------------------------------------


def diagnostics_records(epochs: int, steps_per_epoch: int) -> list[dict]:
    layers = [f"block{i}.conv" for i in range(6)] + ["head"]
    activations = {f"block{i}.act": "relu" for i in range(6)}
    records, step = [{"kind": "layers", "weights": layers, "activations": activations}], 0
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            records.append({"kind": "step", "epoch": epoch, "step": step, "total_grad_norm": 1.0, "loss": 1.0,
                            "grad_norm": {name: 10.0 ** (i / 3 - 2) for i, name in enumerate(layers)},
                            "update_ratio": {name: 10.0 ** (i / 6 - 3.5) for i, name in enumerate(layers)}})
            step += 1
        records.append({"kind": "activations", "epoch": epoch, "step": step, "saturated": {}, "std": {},
                        "dead": {name: 0.1 * i for i, name in enumerate(activations)},
                        "mean": {name: 0.0 for name in activations}})
    return records


@pytest.mark.parametrize("epochs, steps_per_epoch", [(1, 1), (3, 20)])
def test_diagnostics_png_legends_sit_beside_the_panels_and_steps_are_whole(tmp_path, monkeypatch, epochs,
                                                                          steps_per_epoch):
    from dlopt.diagnostics import plot

    drawn = []
    monkeypatch.setattr(plot.pyplot(), "close", drawn.append)  # keep the figure to read it
    plot.plot_diagnostics(diagnostics_records(epochs, steps_per_epoch), tmp_path / "diagnostics.png")
    (fig,) = drawn
    assert_legends_outside_the_axes(fig)
    norms, over_training, ratios, dead = fig.axes
    for ax in (over_training, ratios):
        assert_integer_ticks(ax.xaxis)  # one recorded step: where matplotlib's ticks read -0.04 ... 0.04
    first_last = ["epoch 1"] if epochs == 1 else ["epoch 1", f"epoch {epochs}"]  # not "epoch 1" twice
    assert [line.get_label() for line in norms.lines] == first_last
    assert [line.get_label() for line in dead.lines] == [f"dead, {e}" for e in first_last]


def test_importance_png_says_what_the_whiskers_are():
    feats = Features("table", torch.arange(5).unsqueeze(0), list("abcde"))
    values = {"saliency": torch.randn(8, 5), "permutation": torch.rand(1, 5)}
    fig = importance_figure(values, {"permutation": torch.rand(5) * 0.01}, torch.zeros(8, dtype=torch.long), ["x"],
                            feats)
    assert "whiskers: ± 1 sd over permutation's repeats" in " ".join(fig._suptitle.get_text().split())
    fig = importance_figure({"saliency": torch.randn(8, 5)}, {}, torch.zeros(8, dtype=torch.long), ["x"], feats)
    assert "whiskers" not in fig._suptitle.get_text()


# --- history.png (search), ensemble.png, lr_find.png after a step or two ------------------------------------------


def searched(outcomes: list[str]):
    """An in-memory study whose trials end as `outcomes` say (done, pruned, failed), their values falling."""
    import optuna
    from optuna.distributions import FloatDistribution

    study = optuna.create_study(study_name="s", direction="minimize")
    for i, outcome in enumerate(outcomes):
        trial = study.ask({"optimizer.lr": FloatDistribution(1e-4, 0.1)})
        trial.report(2.0 - 0.1 * i, 0)
        state = {"pruned": optuna.trial.TrialState.PRUNED, "failed": optuna.trial.TrialState.FAIL}.get(outcome)
        study.tell(trial, state=state) if state else study.tell(trial, 1.0 - 0.05 * i)
    return study


@pytest.mark.parametrize("outcomes", [["done"], ["done", "pruned"], ["done", "pruned", "failed"] * 4])
def test_history_png_legend_is_below_the_trials_and_trial_numbers_are_whole(outcomes):
    from dlopt.search import sweeper

    fig = sweeper.history_figure(searched(outcomes), "val/loss")
    (ax,) = fig.axes
    assert len(fig.legends) == 1 and ax.get_legend() is None
    labels, done = [t.get_text() for t in fig.legends[0].get_texts()], outcomes.count("done")
    assert labels[0] == f"done ({done})" and ("best so far" in labels) == (done > 1)  # no line through one point
    assert_legends_outside_the_axes(fig)
    assert_integer_ticks(ax.xaxis)  # one trial: where matplotlib's ticks read -0.04 ... 0.04
    low, high = ax.get_xlim()
    assert low < 0 and len(outcomes) - 1 < high
    assert_every_line_labelled(ax)


@pytest.mark.parametrize("sizes", [1, 2, 5])
def test_ensemble_png_members_added_are_whole_and_the_legend_is_below(tmp_path, monkeypatch, sizes):
    from dlopt.ensemble import plot

    drawn = []
    monkeypatch.setattr(pyplot(), "close", drawn.append)  # keep the figure to read it
    members = [{"name": f"m{i}", "weight": 1, "test": {"acc": 0.9, "nll": 0.3}} for i in range(sizes)]
    curve = [{"acc": 0.9 + 0.01 * k, "nll": 0.3 - 0.01 * k} for k in range(sizes)]
    plot.plot_ensemble(members, {"acc": 0.92, "nll": 0.25}, curve, tmp_path / "ensemble.png")
    (fig,) = drawn
    growth = fig.axes[2]
    fig.canvas.draw()
    assert_integer_ticks(growth.xaxis)  # one size: where matplotlib's ticks read 0.96 ... 1.04
    legend = growth.get_legend().get_window_extent()
    assert not legend.overlaps(growth.get_window_extent())


def visible_tick_labels(axis) -> list:
    """The boxes of the axis' tick labels (major and minor) that are drawn: with a text, inside the view."""
    low, high = sorted(axis.get_view_interval())
    ticks = [*axis.get_major_ticks(), *axis.get_minor_ticks()]
    return [tick.label1.get_window_extent() for tick in ticks
            if tick.label1.get_visible() and tick.label1.get_text() and low <= tick.get_loc() <= high]


@pytest.mark.parametrize("losses", [[2.3], [2.3, 2.2], [2.3, 40.0]])
def test_lr_find_after_a_step_or_two_has_lr_labels_apart_at_powers_of_ten(losses):
    """The range test stopped at once: its lrs lie within a fraction of a decade, whose minor tick labels crowd."""
    lrs = [1e-7 * 10 ** (8 * i / 100) for i in range(len(losses))]  # min_lr 1e-7 to max_lr 10 in 100 steps
    steps = steps_of(losses)
    fig = lr_find._figure(lrs[:len(steps.raw)], steps, None, "exponential")
    ax = fig.axes[0]
    fig.canvas.draw()
    boxes = visible_tick_labels(ax.xaxis)
    assert len(boxes) >= 2
    assert not [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]
    low, high = ax.get_xlim()
    assert low < min(lrs) and max(lrs) < high and math.log10(high / low) >= 1
    assert all(float(math.log10(t)).is_integer() for t in ax.xaxis.get_majorticklocs() if low <= t <= high)
    assert lr_find.lr_limits([1e-6 * 10 ** (i / 10) for i in range(11)]) is None  # a decade or more: matplotlib's
