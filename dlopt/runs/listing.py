"""Run folders below a path, one `Run` each, read as data (JSON and YAML, never code), and tables of them.

A run folder is any folder with a `.hydra/config.yaml` below the path (dlopt.saved_run opens it): runs of train,
eval, ensemble, explain and tune-lr, a sweep's or search's runs, an ensemble's members. Its status comes from what
it left: metrics.json (done, pruned, or a dev run), error.txt (failed, with the reason), interrupted.txt (a killed
search's trial, run again), a result file of a command that writes no metrics.json. Without any of them, the run
failed if its log holds an error (the last one is the reason), is running if its log changed in the last ACTIVE_S
seconds, and was interrupted otherwise. A metrics.json that does not parse is listed as corrupt. A run's resumes
(resumes.json) are its note, and where= matches every value a key had in it. Imports neither torch nor numpy:
listing 1000 runs takes a fraction of a second.

The overrides column shows what tells a run apart, whole (a long cell wraps, it is never cut): the overrides not
shared by every listed run, without those that only name the run (search.trial, search.study_name: its folder says
the same); a search trial's drawn values first; a try-run of `dlopt doctor try=true` as what its remedy changes
(`+remedy=r1` is `model.activation=leaky_relu`, read from the remedy's file in the config folder doctor wrote).

A K-fold cross-validation (data.cv=K) is one run: its metrics.json holds the folds' mean of each metric and their
standard deviations under cv.sd (dlopt.training.crossval); its folds (RUN/folds/k) are listed with path=RUN/folds.
Its metric cells read `mean ± sd` (CSV: the mean, and the sd in a column `METRIC sd` beside it; a count the folds
agree on, such as the epochs, stays one number), and its note says `K-fold cross-validation`, and how many folds
trained when a pruned trial stopped before the last.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from dlopt import saved_run
from dlopt.errors import UserError, did_you_mean

REPORTS = ("runs", "doctor")  # commands whose folders are reports on other runs, not runs
RESULTS = {"explain": "explain.json", "tune_lr": "lr_find.json"}  # the result of a command without metrics.json
ACTIVE_S = 120  # a run without a result whose log changed this recently is still running
COLUMNS = ("run", "time", "kind", "status", "overrides", "objective", "test/acc", "test/ece", "epochs",
           "wall_time_s", "params", "note")
LOWER_IS_BETTER = ("loss", "ece", "nll", "wall_time", "flops", "params", "epochs")
FIELDS = ("run", "time", "kind", "status")  # what every run has besides its metrics and config
NAMES = ("search.trial", "search.study_name")  # overrides that only name a run (its folder says the same)
REMEDY = "+remedy="  # a try-run of dlopt doctor: the option of its config group remedy/ (dlopt.diagnostics.doctor)
ABSENT = "(absent)"  # the value of a key a run does not have
TOTALS = ("wall_time_s", "process_wall_time_s", "steps")  # a cross-validation's are its folds' sum: no spread

_ERROR_LINE = re.compile(r"\]\[ERROR\] - (.+)$", re.M)


@dataclass
class Run:
    folder: Path
    kind: str
    status: str  # done | pruned | dev run | failed | interrupted | running | corrupt
    reason: str = ""
    overrides: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0  # when Hydra wrote the run's config (seconds since the epoch)
    resumes: list[dict[str, Any]] = field(default_factory=list)  # resumes.json: each continuation of the run
    resume_error: str = ""  # why resumes.json does not read
    _choices: Optional[dict[str, Any]] = None
    _config: Optional[dict[str, Any]] = None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "pruned")

    def choices(self) -> dict[str, Any]:
        """Each config group's option (model: cnn), from Hydra's record of the run."""
        if self._choices is None:
            self._choices = saved_run.choices(self.folder)
        return self._choices

    def config(self) -> dict[str, Any]:
        """The run's composed config, resolved with the resolvers saved_run allows, as data: nothing is built; {} when
        it does not read."""
        if self._config is None:
            try:  # as its last resume trained it; as started when resumes.json does not read
                self._config = saved_run.run_config(self.folder, str(self.folder), started=bool(self.resume_error))
            except UserError:
                self._config = {}
        return self._config

    def settings(self) -> dict[str, Any]:
        """What the run was set to, by key: each config group's option, then its overrides, then those its resumes
        added (a later one wins), without the overrides that only name the run."""
        values: dict[str, Any] = dict(self.choices())
        for override in [*self.overrides, *(o for r in self.resumes for o in r["overrides"])]:
            name, sep, value = override.partition("=")
            if name.startswith("~"):
                values[name[1:]] = None
            elif sep:
                values[name.lstrip("+")] = value
        return {k: v for k, v in values.items() if k not in NAMES}

    def shown(self) -> list[str]:
        """The overrides as the listing shows them: a try-run's remedy as what it changes, a search trial's drawn
        values first, without those that only name the run."""
        own = [o for o in self.overrides if o.partition("=")[0] not in NAMES]
        own = [r for o in own for r in (remedy(self.folder, o[len(REMEDY):]) if o.startswith(REMEDY) else [o])]
        if any(o.startswith("search.trial=") for o in self.overrides):
            given = set(search_command(self.folder.parent))
            own = [o for o in own if o not in given] + [o for o in own if o in given]
        return own

    def value(self, key: str) -> tuple[bool, Any]:
        """(found, value) of `key` for this run: its status or kind, an override, a group's option, a key of its
        config (optimizer.lr), or a metric (test/acc)."""
        if key in ("status", "kind"):
            return True, getattr(self, key)
        for override in reversed(self.overrides):
            name, sep, value = override.lstrip("+~").partition("=")
            if sep and name == key:
                return True, value
        if key in self.choices():
            return True, self.choices()[key]
        node: Any = self.config()
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return True, node
        if key in self.metrics:
            return True, self.metrics[key]
        return False, None

    def values(self, key: str) -> list[Any]:
        """Every value `key` had in this run: `value`, and what its resumes set it to or changed it from (a run
        resumed with optimizer=sgd trained with adam, then sgd)."""
        found, value = self.value(key)
        values = [value] if found else []
        for record in self.resumes:
            values += [o.partition("=")[2] for o in record["overrides"] if o.lstrip("+").partition("=")[0] == key]
            change = record.get("changed", {}).get(key, {})
            values += [change[end] for end in ("from", "to") if end in change]
        return values

    def keys(self) -> set[str]:
        """Every key `value` finds, for 'did you mean'."""
        found = {"status", "kind", *self.choices(), *metric_keys([self])}
        found |= {o.lstrip("+~").partition("=")[0] for o in self.overrides}

        def walk(node: Any, prefix: str) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    found.add(f"{prefix}{k}")
                    walk(v, f"{prefix}{k}.")

        walk(self.config(), "")
        return found


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def find(path: Path) -> list[Path]:
    """Every run folder at or below `path`."""
    return saved_run.run_folders(path)


def read(folder: Path, ended: bool = False, now: Optional[float] = None) -> Run:
    """The run of `folder`. `ended`: the caller knows nothing runs in it any more (a sweep that finished), so a run
    without a result failed."""
    hydra = folder / ".hydra"
    try:
        overrides = saved_run.run_overrides(folder, str(folder))
    except UserError:
        overrides = []
    run = Run(folder, saved_run.job_name(folder) or "train", "done", overrides=overrides,
              started=_mtime(hydra / "config.yaml") or _mtime(hydra))
    try:
        run.resumes = saved_run.resumes(folder, saved_run.RESUMES)
    except UserError as err:
        run.resume_error = str(err).replace(f": {folder / saved_run.RESUMES} ", " ")
    try:
        metrics = saved_run.metrics(folder, "metrics.json")
    except UserError as err:  # half-written, or not dlopt's
        run.status, run.reason = "corrupt", str(err).partition(": ")[2][:200]
        return run
    except OSError as err:
        run.status, run.reason = "corrupt", f"metrics.json: {err.strerror}"
        return run
    if metrics is not None:
        run.metrics = metrics
        run.status = "dev run" if metrics.get("dev_run") else "pruned" if metrics.get("pruned") else "done"
        resumed_at = run.resumes[-1]["from_epoch"] if run.resumes else 0
        if isinstance(metrics.get("epochs"), int) and metrics["epochs"] < resumed_at:  # trained on since its metrics
            logs = list(folder.glob("*.log"))
            active = not ended and (now or time.time()) - max(map(_mtime, logs), default=0) < ACTIVE_S
            run.status = "running" if active else "interrupted"
            run.reason = f"resumed from epoch {resumed_at}, not finished since: its metrics.json is of epoch " \
                         f"{metrics['epochs']}"
        return run
    for name, status in (("error.txt", "failed"), ("interrupted.txt", "interrupted")):
        if (folder / name).is_file():
            run.status, run.reason = status, " ".join(saved_run.text(folder / name).split())
            return run
    if run.kind in RESULTS and (folder / RESULTS[run.kind]).is_file():
        return run
    logs = list(folder.glob("*.log"))
    errors = [m.group(1) for log in logs for m in _ERROR_LINE.finditer(saved_run.text(log))]
    if errors:
        run.status, run.reason = "failed", errors[-1].strip()
    elif not ended and (now or time.time()) - max(map(_mtime, logs), default=run.started) < ACTIVE_S:
        run.status = "running"
    else:
        run.status = "failed" if ended else "interrupted"
        run.reason = "no metrics.json" if ended else "no result and no error: stopped before the end (killed?)"
    return run


def cross_validation(metrics: dict[str, Any]) -> Optional[dict[str, Any]]:
    """A K-fold cross-validation's record in its metrics.json (dlopt.training.crossval.summary): {"folds": K,
    "trained": folds trained, "sd": {metric: the folds' standard deviation}}; None for a run of its own, or a cv
    entry that does not read as one."""
    cv = metrics.get("cv") if isinstance(metrics, dict) else None
    if not isinstance(cv, dict) or not _count(cv.get("folds")):
        return None
    trained = cv.get("trained")
    sd = cv.get("sd") if isinstance(cv.get("sd"), dict) else {}
    return {"folds": cv["folds"], "trained": trained if _count(trained) else cv["folds"],
            "sd": {k: float(v) for k, v in sd.items() if _finite(v)}}


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and \
        abs(value) != float("inf")


def cv_note(metrics: dict[str, Any]) -> str:
    """'5-fold cross-validation' (and '2 of 5 folds trained' when a pruned trial stopped before the last); '' for a
    run of its own."""
    cv = cross_validation(metrics)
    if cv is None:
        return ""
    note = f"{cv['folds']}-fold cross-validation"
    if cv["trained"] < cv["folds"]:
        note += f", {cv['trained']} of {cv['folds']} folds trained" + (
            " (its numbers are fold 0's alone)" if cv["trained"] == 1 else " (its numbers are their mean)")
    return note


def fold_sd(metrics: dict[str, Any], key: str) -> Optional[float]:
    """The folds' standard deviation of `key` in a cross-validation's metrics; None for a run of its own, a key
    without one (a total: wall time, steps; a count the folds share), or a cross-validation of one trained fold."""
    cv = cross_validation(metrics)
    return None if cv is None or key in TOTALS or not _finite(metrics.get(key)) else cv["sd"].get(key)


def spread(value: Any, sd: Optional[float]) -> str:
    """A cross-validation's cell: `0.9605 ± 0.0254`, both numbers in the format cell() gives the mean; the mean
    alone without an sd, or for a count every fold agrees on (epochs: 30)."""
    if sd is None or (isinstance(value, int) and not sd):
        return cell(value)
    if isinstance(value, int):
        return f"{value} ± {cell(float(sd))}"
    form = ".4g" if value and not 1e-3 <= abs(value) < 1000 else ".4f"
    return f"{value:{form}} ± {sd:{form}}"


def shown_metric(metrics: dict[str, Any], key: str) -> Any:
    """A metric as a table shows it: `mean ± sd` for a cross-validation, else the value."""
    sd = fold_sd(metrics, key)
    return metrics.get(key) if sd is None else spread(metrics.get(key), sd)


def resumed(run: Run) -> str:
    """The run's resumes as its note: 'resumed from epoch 18: optimizer=sgd resume_changes=true', one per resume."""
    if run.resume_error:
        return run.resume_error
    return "; ".join(map(resume, run.resumes))


def resume(record: dict[str, Any]) -> str:
    """One resume as a person reads it: 'resumed from epoch 18: optimizer=sgd resume_changes=true'."""
    overrides = rounded(record["overrides"])
    return f"resumed from epoch {record['from_epoch']}" + (f": {overrides}" if overrides else "")


def remedy(folder: Path, name: str) -> list[str]:
    """What the remedy `name` of a try-run of `dlopt doctor try=true` sets, as overrides: its file remedy/NAME.yaml
    (in the config folder doctor wrote, recorded as the run's --config-dir, or the run's sweep folder) without what
    remedy/original.yaml sets too; ['original'] for the original. `+remedy=NAME` when the file does not read."""
    if name == "original":
        return ["original"]
    for group in [*(d / "remedy" for d in saved_run.config_dirs(folder)), folder.parent / "remedy"]:
        content = saved_run.yaml_data(saved_run.text(group / f"{name}.yaml"))
        if isinstance(content, dict):
            original = saved_run.yaml_data(saved_run.text(group / "original.yaml"))
            base = set(_as_overrides(original)) if isinstance(original, dict) else set()
            return [o for o in _as_overrides(content) if o not in base] or [f"{REMEDY}{name}"]
    return [f"{REMEDY}{name}"]


def _as_overrides(content: dict[str, Any]) -> list[str]:
    """A config group option's file (`defaults: [{override /model: mlp}]`, `model: {activation: relu}`) as the
    overrides that set the same (model=mlp model.activation=relu)."""
    groups = [f"{key.removeprefix('override').strip().lstrip('/')}={value}" for entry in content.get("defaults") or []
              if isinstance(entry, dict) for key, value in entry.items()]
    values = saved_run.flat({k: v for k, v in content.items() if k != "defaults"})
    return groups + [f"{key}={_text(value)}" for key, value in values.items()]


def _text(value: Any) -> str:
    """A YAML value as an override writes it (true, null, 0.01, [1,2])."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


@functools.lru_cache(maxsize=64)
def search_command(sweep: Path) -> tuple[str, ...]:
    """The overrides a search was started with: what its trials were given, not drawn (read once per search)."""
    return saved_run.sweep_overrides(sweep)


def collect(path: Path, now: Optional[float] = None) -> list[Run]:
    """The runs below `path`, without the folders of commands that report on runs (runs, doctor)."""
    runs = [read(folder, now=now) for folder in find(path)]
    return [run for run in runs if run.kind not in REPORTS]


def conditions(where: Any) -> list[tuple[str, str]]:
    """`where='model=cnn optimizer=adam'` (or a list of such) as (key, value) pairs."""
    items = [where] if isinstance(where, str) else list(where or [])
    pairs = []
    for item in items:
        for condition in str(item).split():
            key, sep, value = condition.partition("=")
            if not sep or not key:
                raise UserError(f"where={where}: '{condition}' is not KEY=VALUE; e.g. where='model=cnn "
                                "optimizer.lr=0.01'")
            pairs.append((key, value))
    return pairs


def same(value: Any, wanted: str) -> bool:
    """A run's value against the one typed: as numbers when both are (0.01 == 1e-2), else as text."""
    if isinstance(value, bool) or str(value).lower() in ("true", "false"):
        return str(value).lower() == wanted.lower()
    try:
        return float(value) == float(wanted)
    except (TypeError, ValueError):
        return "null" if value is None else str(value) == wanted


def known(runs: list[Run], key: str, knob: str) -> None:
    """UserError when no run has `key` (`knob` names the option: where, by), with the closest key."""
    if any(run.value(key)[0] for run in runs):
        return
    keys = set().union(*(run.keys() for run in runs[:50])) if runs else set()
    raise UserError(f"{knob}: no run has the key {key}{did_you_mean(key, keys)}; give a config group (model), a "
                    "config key (optimizer.lr), a metric (test/acc), status or kind")


def select(runs: list[Run], where: Any) -> list[Run]:
    pairs = conditions(where)
    for key, _ in pairs:
        known(runs, key, f"where={where}")
    return [run for run in runs if all(any(same(v, value) for v in run.values(key)) for key, value in pairs)]


def metric_keys(runs: Iterable[Run]) -> set[str]:
    return {k for run in runs for k, v in run.metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def lower_is_better(key: str, runs: list[Run]) -> bool:
    if key == "objective":
        modes = {run.metrics.get("mode", "min") for run in runs if run.metrics}
        return modes != {"max"}
    return any(word in key for word in LOWER_IS_BETTER)


def order(runs: list[Run], sort: Optional[str]) -> list[Run]:
    """Newest first, or best first by a metric (runs without it last)."""
    if sort in (None, "time"):
        return sorted(runs, key=lambda r: r.started, reverse=True)
    valid = metric_keys(runs) | {"objective"}
    if sort not in valid:
        raise UserError(f"sort={sort} is not a metric of these runs{did_you_mean(sort, valid)}; give time or one "
                        f"of {', '.join(sorted(valid))}")
    sign = 1 if lower_is_better(sort, runs) else -1
    have = [r for r in runs if isinstance(r.metrics.get(sort), (int, float))]
    return sorted(have, key=lambda r: sign * r.metrics[sort]) + \
        [r for r in runs if not isinstance(r.metrics.get(sort), (int, float))]


def shared(overrides: list[list[str]]) -> list[str]:
    """The overrides every one of several runs has (search=bayes, trainer.max_epochs=5), in the first's order."""
    if len(overrides) < 2:
        return []
    common = set.intersection(*(set(o) for o in overrides))
    return [o for o in overrides[0] if o in common]


def rounded(overrides: Iterable[str], digits: int = 4) -> str:
    """Overrides as a person reads them: a float value to `digits` significant digits (optimizer.lr=0.001235);
    the files keep the full value."""
    def one(override: str) -> str:
        key, sep, value = override.partition("=")
        if sep and any(c in value for c in ".eE"):
            try:
                number = float(value)
            except ValueError:
                return override
            short = f"{number:.{digits}g}"
            return f"{key}={short}" if float(short) != number else override  # 3.0 stays 3.0
        return override
    return " ".join(one(o) for o in overrides)


def cell(value: Any) -> str:
    """A value as a table shows it: floats to 4 decimals, or 4 significant digits when small or large (1e-05)."""
    if isinstance(value, float):
        return f"{value:.4g}" if value and not 1e-3 <= abs(value) < 1000 else f"{value:.4f}"
    return "" if value is None else str(value)


def rows(runs: list[Run], base: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(the overrides all runs share, one row per run with the overrides that differ and its note: why it failed,
    that it is a cross-validation, its resumes). A cross-validation's row holds its metrics' means, and the folds'
    standard deviations as `METRIC sd`."""
    shown = [run.shown() for run in runs]
    common = shared(shown)
    table = []
    for run, own in zip(runs, shown):
        try:
            name = str(run.folder.relative_to(base)) if run.folder != base else run.folder.name
        except ValueError:
            name = str(run.folder)
        table.append({"run": name, "time": time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started)),
                      "kind": run.kind, "status": run.status, "overrides": rounded(o for o in own if o not in common),
                      **{k: run.metrics.get(k) for k in COLUMNS[5:-1]},
                      **{f"{k} sd": sd for k in COLUMNS[5:-1] if (sd := fold_sd(run.metrics, k)) is not None},
                      "note": "; ".join(filter(None, (run.reason, cv_note(run.metrics), resumed(run))))})
    return common, table


def render(runs: list[Run], base: Path, form: str) -> str:
    """The runs as a terminal table, markdown, CSV or JSON."""
    if form == "json":
        return json.dumps([{"run": str(r.folder), "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(r.started)),
                            "kind": r.kind, "status": r.status, "note": "; ".join(filter(None, (r.reason,
                                                                                               r.resume_error))),
                            "overrides": r.overrides, "resumes": r.resumes, "metrics": r.metrics} for r in runs],
                          indent=1)
    common, table = rows(runs, base)
    used = [c for c in COLUMNS if c in FIELDS or any(row.get(c) not in (None, "") for row in table)]
    if form == "csv":  # a cross-validation's sd in a column of its own beside the metric's mean
        used = [name for c in used for name in (c, f"{c} sd") if name == c or any(f"{c} sd" in row for row in table)]
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(used)
        writer.writerows([[row.get(c) if row.get(c) is not None else "" for c in used] for row in table])
        return out.getvalue().rstrip("\n")
    head = f"{len(runs)} run{'s' * (len(runs) != 1)} in {base}" + (f"; all with {' '.join(common)}" if common else "")
    table = [{**row, **{c: spread(row[c], row[f"{c} sd"]) for c in used if f"{c} sd" in row}} for row in table]
    return head + "\n\n" + (markdown(used, table) if form == "md" else aligned(used, table))


def markdown(columns: list[str], table: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)).replace("|", "\\|") for c in columns) + " |" for row in table]
    return "\n".join(lines)


def aligned(columns: list[str], table: list[dict[str, Any]], widest: int = 60) -> str:
    """A plain table for the terminal: columns padded; a cell longer than `widest` characters wraps onto the next
    lines of its column (at spaces: one override a piece), so nothing is cut off."""
    def wrapped(value: Any) -> list[str]:
        text = cell(value)
        return textwrap.wrap(text, widest, break_on_hyphens=False) if len(text) > widest else [text]

    rows = [[[c] for c in columns]] + [[wrapped(row.get(c)) for c in columns] for row in table]
    widths = [max(len(line) for r in rows for line in r[i]) for i in range(len(columns))]
    lines = []
    for r in rows:
        for n in range(max(map(len, r))):
            lines.append("  ".join((c[n] if n < len(c) else "").ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)
