"""Runs grouped by knobs (`dlopt runs by=optimizer`): per group n, mean ± sd of the metric and the test metrics, and
whether each group differs from the best one by more than the noise.

The test is Welch's t-test (scipy.stats.ttest_ind with equal_var=False) of the metric between a group and the best
group: it does not assume the two spreads are equal (a diverging optimizer is far noisier than a good one), and it
works from the 3-5 seeds a sweep affords, where a bootstrap interval has only a handful of distinct resamples to
draw from. Only finished runs are counted (pruned runs stopped early and failed ones have no value); the plot
marks the others. Groups of one run get no test.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from dlopt.runs.listing import Run, cell, known, lower_is_better, markdown

ALPHA = 0.05  # a difference with p below this is called real
SHOWN = ("test/acc", "test/loss", "test/ece")  # test metrics given with the tested metric


@dataclass
class Group:
    values: tuple[Any, ...]
    runs: list[Run] = field(default_factory=list)  # every run with these values, finished or not
    p: Optional[float] = None  # Welch's t-test against the best group; None for the best and groups of one run
    best: bool = False

    @property
    def finished(self) -> list[Run]:
        return [run for run in self.runs if run.status == "done"]

    def numbers(self, metric: str) -> list[float]:
        return [float(run.metrics[metric]) for run in self.finished if _number(run.metrics.get(metric))]

    def mean_sd(self, metric: str) -> tuple[Optional[float], Optional[float]]:
        values = self.numbers(metric)
        if not values:
            return None, None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def aggregate(runs: list[Run], by: list[str], metric: str) -> list[Group]:
    """Groups by the values of `by`, best mean `metric` first, each tested against the best."""
    for key in by:
        known(runs, key, f"by={','.join(by)}")
    groups: dict[tuple, Group] = {}
    for run in runs:
        values = tuple(run.value(key)[1] for key in by)
        groups.setdefault(tuple(map(_key, values)), Group(values)).runs.append(run)
    lower = lower_is_better(metric, runs)
    scored = sorted((g for g in groups.values() if g.numbers(metric)),
                    key=lambda g: g.mean_sd(metric)[0] * (1 if lower else -1))
    unscored = [g for g in groups.values() if not g.numbers(metric)]
    if scored:
        best = scored[0]
        best.best = True
        for group in scored[1:]:
            group.p = welch(best.numbers(metric), group.numbers(metric))
    return scored + unscored


def _key(value: Any) -> Any:
    """What groups a value: a number by its value (1e-2 and 0.01 typed on two command lines are one group)."""
    return float(value) if _number(value) or _numeric_text(value) else str(value)


def welch(a: list[float], b: list[float]) -> Optional[float]:
    """Welch's two-sided p-value; None with fewer than 2 values on a side, 0 or 1 when neither side varies."""
    if len(a) < 2 or len(b) < 2:
        return None
    if statistics.stdev(a) == 0 and statistics.stdev(b) == 0:
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    from scipy.stats import ttest_ind

    return float(ttest_ind(a, b, equal_var=False).pvalue)


def verdict(group: Group, metric: str) -> str:
    if group.best:
        return "best"
    if group.p is None:
        return "no test (n < 2)" if group.numbers(metric) else "no finished run"
    return f"worse (p={group.p:.2g})" if group.p < ALPHA else f"within noise (p={group.p:.2g})"


def table(groups: list[Group], by: list[str], metric: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows: the group's values, n (finished of all), mean ± sd of the metric and the test metrics, the
    verdict against the best group."""
    shown = [metric, *(m for m in SHOWN if m != metric)]
    columns = [*by, "n", *shown, "vs best"]
    rows = []
    for group in groups:
        row: dict[str, Any] = dict(zip(by, group.values))
        row["n"] = f"{len(group.finished)}" + (f" of {len(group.runs)}" if len(group.runs) != len(group.finished)
                                               else "")
        for name in shown:
            mean, sd = group.mean_sd(name)
            row[name] = "" if mean is None else cell(mean) + (f" ± {cell(sd)}" if sd is not None else "")
        row["vs best"] = verdict(group, metric)
        rows.append(row)
    return columns, rows


def report(groups: list[Group], by: list[str], metric: str) -> str:
    columns, rows = table(groups, by, metric)
    note = (f"grouped by {', '.join(by)}: mean ± sd over the finished runs of each group; 'vs best' is Welch's "
            f"t-test of {metric} against the best group (worse if p < {ALPHA})")
    return note + "\n\n" + markdown(columns, rows)


def plot(runs: list[Run], by: list[str], metric: str, path: Path) -> None:
    """axes.png: the metric against each knob of `by`, one dot per finished run and the group means; pruned runs as
    triangles at their value, failed and unfinished runs as crosses on the axis (the tuning playbook's axis plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(by), figsize=(5 * len(by) + 1, 4.5), squeeze=False)
    for ax, key in zip(axes[0], by):
        values = [run.value(key)[1] for run in runs]
        numeric = all(_number(v) or _numeric_text(v) for v in values)
        if numeric:
            x_of = {str(v): float(v) for v in values}
            positive = [x for x in x_of.values() if x > 0]
            if len(positive) == len(x_of) and max(positive) / min(positive) >= 100:
                ax.set_xscale("log")
            elif all(x == int(x) for x in x_of.values()):
                ax.xaxis.get_major_locator().set_params(integer=True)
        else:
            labels = sorted({str(v) for v in values})
            x_of = {label: i for i, label in enumerate(labels)}
            ax.set_xticks(range(len(labels)), labels, rotation=20)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        done = [(x_of[str(v)], float(r.metrics[metric])) for r, v in zip(runs, values)
                if r.status == "done" and _number(r.metrics.get(metric))]
        pruned = [(x_of[str(v)], float(r.metrics[metric])) for r, v in zip(runs, values)
                  if r.status == "pruned" and _number(r.metrics.get(metric))]
        other = [x_of[str(v)] for r, v in zip(runs, values) if r.status not in ("done", "pruned")]
        if done:
            ax.plot(*zip(*done), "o", alpha=0.7, color="tab:blue", label=f"done ({len(done)})")
            means = {}
            for x, y in done:
                means.setdefault(x, []).append(y)
            xs = sorted(means)
            ax.plot(xs, [statistics.fmean(means[x]) for x in xs], "-" if numeric else "_", color="tab:red",
                    markersize=30, markeredgewidth=2, label="mean")
        if pruned:
            ax.plot(*zip(*pruned), "^", color="tab:orange", label=f"pruned ({len(pruned)})")
        if other:
            ax.plot(other, [0] * len(other), "x", color="tab:gray", markersize=10, clip_on=False,
                    transform=ax.get_xaxis_transform(), label=f"failed or unfinished ({len(other)})")
        ax.set_xlabel(key)
        monitors = {r.metrics.get("monitor") for r in runs if r.metrics}
        ax.set_ylabel(f"{metric} ({monitors.pop()})" if metric == "objective" and len(monitors) == 1 else metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _numeric_text(value: Any) -> bool:
    try:
        return math.isfinite(float(value)) and not isinstance(value, bool) and str(value).lower() not in ("true",
                                                                                                            "false")
    except (TypeError, ValueError):
        return False
