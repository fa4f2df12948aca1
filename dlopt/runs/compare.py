"""`dlopt runs compare=[A,B,...]`: the keys of the runs' composed and resolved configs that differ (not only the
overrides: a changed default shows too; a resumed run's config as its last resume trained it), each run's resumes
(from which epoch, with which overrides, what they changed), their metrics side by side, and compare.png with val
loss and val accuracy per epoch overlaid from each run's history.json. Configs and histories are read as data, by
dlopt.saved_run.

A K-fold cross-validation (data.cv=K) is one run: its metrics are the folds' means, shown as `mean ± sd` over its
folds, and its curve is the folds' mean per epoch (the epochs every trained fold reached)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dlopt import saved_run
from dlopt.errors import UserError
from dlopt.runs.listing import (ABSENT, Run, cell, cross_validation, cv_note, markdown, read, resume, rounded,
                                shared, shown_metric)

METRICS = ("objective", "val/loss", "val/acc", "test/loss", "test/acc", "test/ece", "best_epoch", "epochs",
           "wall_time_s", "params")
CURVES = ("val/loss", "val/acc")
FOLDS = "folds"  # a cross-validation's RUN/folds/k (dlopt.training.crossval)


def open_runs(paths: list[Any]) -> list[Run]:
    if len(paths) < 2:
        raise UserError(f"compare=[{','.join(map(str, paths))}]: give at least two run folders, e.g. "
                        "compare=[outputs/train/A,outputs/train/B]")
    runs = []
    for path in paths:
        folder = Path(str(path)).expanduser()
        if not saved_run.is_run_folder(folder):
            what = "does not exist" if not folder.exists() else "is not a run folder (it has no .hydra/config.yaml)"
            raise UserError(f"compare: {path} {what}; give folders of dlopt runs (outputs/train/DATE/TIME)")
        runs.append(read(folder))
    return runs


def differences(runs: list[Run]) -> dict[str, list[Any]]:
    """Each config group's option (optimizer: sgd) and config key whose value is not the same in every run, with
    each run's value (ABSENT where it has none)."""
    configs = [{**{group: run.settings().get(group, option) for group, option in run.choices().items()},
                **saved_run.flat(run.config())} for run in runs]  # a group's option as a resume last set it
    keys = list(dict.fromkeys(k for config in configs for k in config))
    return {k: [c.get(k, ABSENT) for c in configs] for k in keys if len({json.dumps(c.get(k, ABSENT), default=str)
                                                                          for c in configs}) > 1}


def names(runs: list[Run]) -> list[str]:
    """Short distinct names: the last parts of the folders' paths that tell them apart."""
    parts = [run.folder.resolve().parts for run in runs]
    for depth in range(1, max(map(len, parts)) + 1):
        short = ["/".join(p[-depth:]) for p in parts]
        if len(set(short)) == len(short):
            return short
    return [str(run.folder) for run in runs]


def history(run: Run) -> list[dict[str, Any]]:
    """The run's metrics per epoch ([] when it has none or they do not read: the run is named instead); a
    cross-validation's: the mean of its trained folds' at each epoch they all reached."""
    cv = cross_validation(run.metrics)
    folders = [run.folder / FOLDS / str(k) for k in range(cv["trained"])] if cv else [run.folder]
    try:
        histories = [saved_run.history(folder, str(folder)) for folder in folders]
    except UserError:
        return []
    if len(histories) == 1 or not all(histories):
        return histories[0] if len(histories) == 1 else []
    by_epoch = [{row["epoch"]: row for row in rows} for rows in histories]
    epochs = sorted(set.intersection(*(set(rows) for rows in by_epoch)))
    mean = []
    for epoch in epochs:
        rows = [rows[epoch] for rows in by_epoch]
        keys = [k for k in rows[0] if k != "epoch" and all(isinstance(r.get(k), (int, float)) for r in rows)]
        mean.append({"epoch": epoch, **{k: sum(r[k] for r in rows) / len(rows) for k in keys}})
    return mean


def report(runs: list[Run]) -> str:
    labels = names(runs)
    diff = differences(runs)
    lines = [f"compared: {', '.join(f'{label} ({_what(run)})' for label, run in zip(labels, runs))}", ""]
    columns = ["key", *labels]
    if diff:
        lines += ["config keys that differ:", "",
                  markdown(columns, [{"key": k, **{label: _shown(v) for label, v in zip(labels, values)}}
                                     for k, values in diff.items()]), ""]
    else:
        lines += ["their configs are the same", ""]
    lines += resumes(labels, runs)
    shown = [m for m in METRICS if any(m in run.metrics for run in runs)]
    folds = any(cross_validation(run.metrics) for run in runs)
    lines += [("metrics (a cross-validation's: mean ± sd over its folds):" if folds else "metrics:"), "",
              markdown(["metric", *labels], [{"metric": m, **{label: shown_metric(run.metrics, m)
                                                              for label, run in zip(labels, runs)}} for m in shown])]
    return "\n".join(lines)


def _what(run: Run) -> str:
    """The run's status, and what a cross-validation is (done, 5-fold cross-validation)."""
    return ", ".join(filter(None, (run.status, cv_note(run.metrics))))


def resumes(labels: list[str], runs: list[Run]) -> list[str]:
    """Lines of each resumed run's resumes: from which epoch, its overrides and what they changed (old -> new)."""
    lines = []
    for label, run in zip(labels, runs):
        if run.resume_error:
            lines.append(f"- {label}: {run.resume_error} (its resumes are not known)")
        for record in run.resumes:
            changed = ", ".join(f"{key} {_shown(c.get('from', ABSENT))} -> {_shown(c.get('to', ABSENT))}"
                                for key, c in record.get("changed", {}).items())
            lines.append(f"- {label}: {resume(record)}" + (f"; changed {changed}" if changed else "")
                         + (f"; at {record['time']}" if record.get("time") else ""))
    if not lines:
        return []
    return ["resumes (the config above is as the last resume trained it):", "", *lines, ""]


def as_json(runs: list[Run]) -> str:
    """The comparison as JSON (format=json): each run's folder, status and resumes, the differing keys, the
    metrics."""
    return json.dumps({"runs": [{"run": str(r.folder), "status": r.status, "resumes": r.resumes,
                                 **({"resumes_error": r.resume_error} if r.resume_error else {}),
                                 **({"cv": r.metrics["cv"]} if cross_validation(r.metrics) else {})} for r in runs],
                       "differences": differences(runs),
                       "metrics": {m: [r.metrics.get(m) for r in runs] for m in METRICS
                                   if any(m in r.metrics for r in runs)}}, indent=1, default=str)


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else cell(value) if isinstance(value, float) else json.dumps(value)


def plot(runs: list[Run], path: Path) -> list[str]:
    """compare.png: `compare_figure`; returns the runs without a history."""
    from dlopt.training.report import pyplot

    figure, missing = compare_figure(runs)
    figure.savefig(path, dpi=110)
    pyplot().close(figure)
    return missing


def compare_figure(runs: list[Run]):
    """Val loss and val accuracy per epoch (whole-number ticks), one line per run, named in one legend below the
    plots; returns the figure and the runs without a history."""
    from dlopt.training.report import legend_below, pyplot, whole_ticks

    missing, lines = [], []
    shown = [run.shown() for run in runs]
    common = shared(shown)
    for label, run, overrides in zip(names(runs), runs, shown):
        own = rounded(o for o in overrides if o not in common)
        label = f"{label}: {own}" if own else label
        cv = cross_validation(run.metrics)
        label += f" (mean of {cv['trained']} folds)" if cv and cv["trained"] > 1 else ""
        rows = history(run)
        if not rows:
            missing.append(str(run.folder))
            continue
        lines.append((label, rows))
    columns = 1 if any(len(label) > 60 for label, _ in lines) else 2
    figure, axes = pyplot().subplots(1, len(CURVES), figsize=(12, 4.5 + 0.2 * -(-len(lines) // columns)),
                                     layout="constrained")
    epochs = set()
    for i, (label, rows) in enumerate(lines):
        for ax, metric in zip(axes, CURVES):
            points = [(r["epoch"], r[metric]) for r in rows if isinstance(r.get(metric), (int, float))
                      and isinstance(r.get("epoch"), (int, float))]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, color=f"C{i % 10}", label=label)
                epochs.update(x for x, _ in points)
    for ax, metric in zip(axes, CURVES):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        whole_ticks(ax, epochs)
    legend_below(figure, ncol=columns, fontsize=8)
    return figure, missing
