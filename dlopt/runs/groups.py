"""Runs grouped by knobs (`dlopt runs by=optimizer`): per group n, mean ± sd of the metric and the test metrics, and
whether each group differs from the best one by more than the noise.

The test is Welch's t-test (scipy.stats.ttest_ind with equal_var=False) of the metric between a group and the best
group: it does not assume the two spreads are equal (a diverging optimizer is far noisier than a good one), and it
works from the 3-5 seeds a sweep affords, where a bootstrap interval has only a handful of distinct resamples to
draw from. Only finished runs are counted (pruned runs stopped early and failed ones have no value); the plot
marks the others. Groups of one run get no test.

The test takes a group's runs for replicates: the same settings, another seed. When the counted runs differ in a
key besides the seeds (a config group's option, an override, a search's drawn value, a resume's override: a run
counts as it last trained), the grouping is incomplete. A key that differs inside a group makes its spread that
key's effect, not seed noise: that group gets no verdict (nor does any group when it is the best one), and the note
names the key and the `by=` that groups by every varied key. A key with one value per group but not the same in all
is tested with `by` (the difference between groups is theirs together): its values are shown beside `by`'s. Numbers
read alike: mean and sd to the same decimal places, those of the sd to 2 significant digits, one number of places
per column; p to 2 significant digits.

A K-fold cross-validation (data.cv=K) is one run, one replicate: its value is its folds' mean (what its metrics.json
says), and a group's sd is that between its runs, never that of folds, which share training samples and so are no
replicates (a test on them would take their spread for noise that independent runs would show). A note says so, and
gives the folds' sd of the metric for each group of a single cross-validation (it has no test: n is 1). Folds listed
as runs (path=RUN/folds) differ in data.cv (k/K): not replicates, and the note says to list their cross-validation.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from dlopt.checks.values import number
from dlopt.runs.listing import ABSENT, NAMES, Run, cell, cross_validation, fold_sd, known, lower_is_better, \
    markdown

ALPHA = 0.05  # a difference with p below this is called real
SHOWN = ("test/acc", "test/loss", "test/ece")  # test metrics given with the tested metric
UNNAMED = ("resume", "resume_changes")  # keys of resuming: which run, the consent to change it (not settings)
CV = "data.cv"  # K for a K-fold cross-validation; 'k/K' for its fold k (dlopt.training.crossval)
_FOLD = re.compile(r"\d+/\d+")


@dataclass
class Group:
    values: tuple[Any, ...]
    runs: list[Run] = field(default_factory=list)  # every run with these values, finished or not
    p: Optional[float] = None  # Welch's t-test against the best group; None for the best and untested groups
    best: bool = False
    mixed: list[str] = field(default_factory=list)  # keys its counted runs differ in besides `by` and the seeds
    untested: str = ""  # why a group with runs to count has no test
    also: dict[str, Any] = field(default_factory=dict)  # keys with one value per group, not the same in all

    @property
    def finished(self) -> list[Run]:
        return [run for run in self.runs if run.status == "done"]

    def counted(self, metric: str) -> list[Run]:
        """The runs whose `metric` the group's numbers are."""
        return [run for run in self.finished if number(run.metrics.get(metric), finite=True)]

    def numbers(self, metric: str) -> list[float]:
        return [float(run.metrics[metric]) for run in self.counted(metric)]

    def mean_sd(self, metric: str) -> tuple[Optional[float], Optional[float]]:
        values = self.numbers(metric)
        if not values:
            return None, None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


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
    _replicates(scored, by, metric)
    if scored:
        best = scored[0]
        best.best = True
        for group in scored[1:]:
            if best.mixed and not group.mixed:
                group.untested = "no test (the best group is not replicates)"
            elif not group.mixed:
                group.p = welch(best.numbers(metric), group.numbers(metric))
    return scored + unscored


def _replicates(groups: list[Group], by: list[str], metric: str) -> None:
    """Each group's keys that vary among its counted runs (`mixed`), and the values of the keys that vary only
    between groups (`also`)."""
    counted = [run for group in groups for run in group.counted(metric)]
    keys = varied(counted, [])  # `by` too: a resume may have changed a run's value after it started
    for group in groups:
        group.mixed = varied(group.counted(metric), [], keys)
    between = [key for key in keys if key not in by and not any(key in group.mixed for group in groups)]
    for group in groups:
        group.also = {key: setting(group.counted(metric)[0], key) for key in between}


def varied(runs: list[Run], besides: list[str], keys: Optional[list[str]] = None) -> list[str]:
    """The keys (of `keys`, or any a run was set by, but `besides`) whose value is not the same in all `runs` as
    they last trained: a config group's option, an override, a search's drawn value, a resume's override; not the
    seeds, nor keys that only name a run."""
    if keys is None:
        keys = list(dict.fromkeys(k for run in runs for k in run.settings()
                                  if k not in besides and k not in NAMES + UNNAMED and not seed(k)))
    return [k for k in keys if len({_key(setting(run, k)) for run in runs}) > 1]


def seed(key: str) -> bool:
    """A seed: what replicates differ in (seed, data.split_seed, explain.sample_seed)."""
    return key.rpartition(".")[2].endswith("seed")


def setting(run: Run, key: str) -> Any:
    """The run's value of `key`: as set (an option, an override), else from its config; ABSENT without one."""
    settings = run.settings()
    if key in settings:
        return settings[key]
    found, value = run.value(key)
    return value if found else ABSENT


def _key(value: Any) -> Any:
    """What groups a value: a number by its value (1e-2 and 0.01 typed on two command lines are one group), true
    and null as typed or read."""
    if number(value, finite=True) or _numeric_text(value):
        return float(value)
    return "null" if value is None else str(value).lower() if str(value).lower() in ("true", "false") else \
        json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def welch(a: list[float], b: list[float]) -> Optional[float]:
    """Welch's two-sided p-value; None with fewer than 2 values on a side, 0 or 1 when neither side varies."""
    if len(a) < 2 or len(b) < 2:
        return None
    if statistics.stdev(a) == 0 and statistics.stdev(b) == 0:
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    from scipy.stats import ttest_ind

    return float(ttest_ind(a, b, equal_var=False).pvalue)


def verdict(group: Group, metric: str) -> str:
    if group.mixed:
        return ("best mean; " if group.best else "") + f"not replicates ({_differ(group.mixed)})"
    if group.best:
        return "best"
    if group.p is None:
        return group.untested or ("no test (n < 2)" if group.numbers(metric) else "no finished run")
    return f"worse ({_p(group.p)})" if group.p < ALPHA else f"within noise ({_p(group.p)})"


def _differ(keys: list[str]) -> str:
    return f"{', '.join(keys)} differ{'s' * (len(keys) == 1)}"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def places(pairs: list[tuple[Optional[float], Optional[float]]]) -> int:
    """Decimal places of a column of mean ± sd: the smallest sd's 2 significant digits; without an sd, the smallest
    mean's 4."""
    sds = [abs(sd) for _, sd in pairs if sd]
    means = [abs(mean) for mean, _ in pairs if mean]
    if not sds and not means:
        return 4
    digits, smallest = (2, min(sds)) if sds else (4, min(means))
    return max(0, min(12, digits - 1 - math.floor(math.log10(smallest))))


def table(groups: list[Group], by: list[str], metric: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows: the group's values (and those of keys with one value per group), n (finished of all),
    mean ± sd of the metric and the test metrics, the verdict against the best group."""
    shown = [metric, *(m for m in SHOWN if m != metric)]
    also = list(groups[0].also) if groups else []
    columns = [*by, *also, "n", *shown, "vs best"]
    rows: list[dict[str, Any]] = [{**{k: _label(v) for k, v in zip(by, group.values)},
                                   **{k: _label(v) for k, v in group.also.items()}} for group in groups]
    for row, group in zip(rows, groups):
        row["n"] = f"{len(group.finished)}" + (f" of {len(group.runs)}" if len(group.runs) != len(group.finished)
                                               else "")
    for name in shown:
        pairs = [group.mean_sd(name) for group in groups]
        decimals = places(pairs)
        for row, (mean, sd) in zip(rows, pairs):
            row[name] = "" if mean is None else f"{mean:.{decimals}f}" + (f" ± {sd:.{decimals}f}" if sd is not None
                                                                          else "")
    for row, group in zip(rows, groups):
        row["vs best"] = verdict(group, metric)
    return columns, rows


def _label(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "null" if value is None else cell(value)


def notes(groups: list[Group], by: list[str], metric: str = "objective") -> list[str]:
    """What the grouping leaves out: keys that vary inside groups (no verdict for them), keys that vary only
    between groups (tested together with `by`); with the `by=` that groups by every varied key. How
    cross-validations count, and folds listed as runs."""
    mixed = list(dict.fromkeys(k for group in groups for k in group.mixed))
    also = list(groups[0].also) if groups else []
    every = f"by=[{','.join(dict.fromkeys([*by, *mixed, *also]))}]"
    resumed = [k for k in mixed if k in by]  # a key of `by` differs inside a group only after a resume changed it
    lines = folds(groups, by, metric)
    fold_runs = CV in mixed and any(_FOLD.fullmatch(str(setting(run, CV))) for g in groups if CV in g.mixed
                                    for run in g.counted(metric))
    if mixed:
        named = [" ".join(map(_label, g.values)) for g in groups if g.mixed]
        others = any(g.untested for g in groups)  # groups of replicates left untested by a mixed best group
        lines.append(f"not replicates: in {'group' if len(named) == 1 else 'groups'} {', '.join(named)} the runs "
                     f"differ in {', '.join(mixed)}, not only in the seed: the spread is not seed noise, so "
                     f"{'it gets' if len(named) == 1 else 'they get'} no verdict"
                     + (" (nor do the others: the best group is not replicates)" if others else "")
                     + (f"; a resume changed {', '.join(resumed)} (the runs' notes in dlopt runs say which)"
                        if resumed else "")
                     + (f"; {CV}=k/K: they are folds of a cross-validation, which share training samples; list "
                        "the cross-validation itself (path= the folder that holds folds/) to count it as one run"
                        if fold_runs else "")
                     + (f"; group by every key that varies: {every}"
                        if len(mixed) > len(resumed) and not (fold_runs and mixed == [CV]) else ""))
    if also:
        lines.append(f"the groups also differ in {', '.join(also)} (one value each, shown): a difference between "
                     f"groups is that of {', '.join([*by, *also])} together" + ("" if mixed else f"; {every} says so"))
    return lines


def folds(groups: list[Group], by: list[str], metric: str) -> list[str]:
    """A line on the cross-validations among the counted runs: each counts once, by its folds' mean; the folds' sd
    of `metric` for each group of a single cross-validation. [] without one."""
    counted = [run for group in groups for run in group.counted(metric)]
    if not any(cross_validation(run.metrics) for run in counted):
        return []
    line = ("cross-validations: each counts as one run, by its folds' mean (folds share training samples: they are "
            "not replicates)")
    single = [(group, group.counted(metric)[0]) for group in groups if len(group.counted(metric)) == 1
              and cross_validation(group.counted(metric)[0].metrics)]
    spreads = []
    for group, run in single:
        cv, sd = cross_validation(run.metrics), fold_sd(run.metrics, metric)
        name = " ".join(f"{key}={_label(value)}" for key, value in zip(by, group.values))
        spreads.append(f"{name} {sd:.2g} over {cv['trained']} folds" if sd is not None else
                       f"{name} none ({cv['trained']} of {cv['folds']} folds trained)")
    if spreads:
        one = len(single) == 1
        line += (f"; {'a group' if one else 'groups'} of one cross-validation{'' if one else ' each'}, so no test "
                 f"(n < 2), with the sd of {metric} over {'its' if one else 'their'} folds: {', '.join(spreads)}")
    return [line]


def report(groups: list[Group], by: list[str], metric: str) -> str:
    columns, rows = table(groups, by, metric)
    note = (f"grouped by {', '.join(by)}: mean ± sd over the finished runs of each group; 'vs best' is Welch's "
            f"t-test of {metric} against the best group (worse if p < {ALPHA})")
    return "\n".join([note, *notes(groups, by, metric)]) + "\n\n" + markdown(columns, rows)


def plot(runs: list[Run], by: list[str], metric: str, path: Path) -> None:
    """axes.png: `axes_figure`."""
    from dlopt.training.report import pyplot

    figure = axes_figure(runs, by, metric)
    figure.savefig(path, dpi=110)
    pyplot().close(figure)


def axes_figure(runs: list[Run], by: list[str], metric: str):
    """The metric against each knob of `by`, one dot per finished run and the group means; pruned runs as triangles
    at their value, failed and unfinished runs as crosses on the axis (the tuning playbook's axis plot). One legend
    below the plots, outside the data."""
    from dlopt.training.report import legend_below, pyplot, whole_ticks

    figure, axes = pyplot().subplots(1, len(by), figsize=(5 * len(by) + 1, 5), squeeze=False, layout="constrained")
    for ax, key in zip(axes[0], by):
        values = [run.value(key)[1] for run in runs]
        numeric = all(number(v, finite=True) or _numeric_text(v) for v in values)
        if numeric:
            x_of = {str(v): float(v) for v in values}
            positive = [x for x in x_of.values() if x > 0]
            if len(positive) == len(x_of) and max(positive) / min(positive) >= 100:
                ax.set_xscale("log")
            elif all(x == int(x) for x in x_of.values()):
                whole_ticks(ax, x_of.values())
        else:
            labels = sorted({str(v) for v in values})
            x_of = {label: i for i, label in enumerate(labels)}
            ax.set_xticks(range(len(labels)), labels, rotation=20)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        done = [(x_of[str(v)], float(r.metrics[metric])) for r, v in zip(runs, values)
                if r.status == "done" and number(r.metrics.get(metric), finite=True)]
        pruned = [(x_of[str(v)], float(r.metrics[metric])) for r, v in zip(runs, values)
                  if r.status == "pruned" and number(r.metrics.get(metric), finite=True)]
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
    legend_below(figure, fontsize=8)
    return figure


def _numeric_text(value: Any) -> bool:
    try:
        return math.isfinite(float(value)) and not isinstance(value, bool) and str(value).lower() not in ("true",
                                                                                                            "false")
    except (TypeError, ValueError):
        return False
