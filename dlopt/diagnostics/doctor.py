"""`dlopt doctor`: read what a finished (or failed) run recorded, name its symptoms with the evidence,
and rank remedies as complete commands; with try=true, train the run and its top remedies as one
sweep and compare. Reading imports no torch: only files of the run folder, opened as data
(dlopt.saved_run).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import yaml

from dlopt import saved_run
from dlopt.diagnostics import remedies as cures
from dlopt.diagnostics import symptoms
from dlopt.errors import UserError
from dlopt.training.report import write_json

log = logging.getLogger(__name__)

REPORT = "doctor.json"
# overrides of a run that are not choices of the user: a search trial's bookkeeping, a resume
NOT_CHOICES = ("search.trial=", "search.study_name=", "resume=", "+remedy=")


@dataclasses.dataclass
class Diagnosis:
    run: Path
    overrides: list[str]
    config: dict[str, Any]
    metrics: dict[str, Any]
    findings: list[symptoms.Finding]
    recorded: bool  # the run recorded per-layer diagnostics (not diagnostics=none) for its every epoch
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list, repr=False)  # those judged
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list, repr=False)
    partial: Optional[str] = None  # what the per-layer records miss, when they do not start at the first epoch

    def remedies(self, finding: symptoms.Finding) -> list[cures.Remedy]:
        return cures.remedies(finding, self.config, self.findings)

    def top_remedies(self, n: int) -> list[tuple[symptoms.Finding, cures.Remedy]]:
        """The first remedy of each symptom, most fundamental symptom first, then the second ones, ...; a remedy
        that two symptoms share (the report's one learning rate) once."""
        per = [self.remedies(f) for f in self.findings]
        ranked, seen = [], set()
        for i in range(max(map(len, per), default=0)):
            for finding, remedies in zip(self.findings, per):
                if i < len(remedies) and tuple(remedies[i].overrides) not in seen:
                    seen.add(tuple(remedies[i].overrides))
                    ranked.append((finding, remedies[i]))
        return ranked[:n]

    def to_json(self) -> dict[str, Any]:
        return {
            "run": str(self.run), "healthy": not self.findings, "recorded_layers": self.recorded,
            "partial_records": self.partial,
            "symptoms": [{**dataclasses.asdict(f), "remedies": [
                {"overrides": r.overrides, "why": r.why,
                 "command": cures.command(cures.with_remedy(self.overrides, r.overrides))}
                for r in self.remedies(f)]} for f in self.findings]}


def examine(run: Path, thresholds: dict[str, float], named: str) -> Diagnosis:
    """The diagnosis of one run folder from its files: findings first, most fundamental first."""
    config = saved_run.run_config(run, named)
    overrides = [o for o in saved_run.run_overrides(run, named) if not o.startswith(NOT_CHOICES)]
    metrics = saved_run.metrics(run, named) or {}
    error = run / "error.txt"
    if not metrics and error.is_file():  # a failed run of a sweep says why
        metrics = {"error": error.read_text(errors="replace").strip()}
    if not metrics:
        metrics = {"error": _failure(run)}
    records_file = run / "diagnostics.jsonl"
    records = symptoms.read_records(records_file) if records_file.is_file() else []
    history = saved_run.history(run, named)
    partial = symptoms.missing_records(records, history)
    if partial:  # judged from the curves alone: per-layer symptoms need the run's first epochs
        records = []
    return Diagnosis(run, overrides, config, metrics, symptoms.diagnose(records, history, metrics, config, thresholds),
                     bool(records), records, history, partial)


def _failure(run: Path) -> str:
    """The last error line of a run's log: why a run without metrics.json stopped (a diverged loss...)."""
    for log_file in run.glob("*.log"):
        errors = [line for line in log_file.read_text(errors="replace").splitlines() if "[ERROR]" in line]
        if errors:
            return errors[-1].split("] - ", 1)[-1]
    return ""


def describe(diagnosis: Diagnosis, remedies_shown: int = 3) -> str:
    """What doctor prints for one run."""
    lines = [f"{diagnosis.run}:"]
    status = diagnosis.metrics.get("stop_reason") or diagnosis.metrics.get("error")
    if status:
        lines.append(f"  run ended: {status}")
    if diagnosis.partial:
        lines.append(f"  {diagnosis.partial}: judged from the curves alone")
    elif not diagnosis.recorded:
        lines.append("  no per-layer records (diagnostics=none or older run): what the curves alone show")
    if not diagnosis.findings:
        lines.append("  healthy: no symptom found")
    for finding in diagnosis.findings:
        lines += [f"  {finding.title.upper()}: {finding.evidence}", f"    likely cause: {finding.cause}"]
        for i, remedy in enumerate(diagnosis.remedies(finding)[:remedies_shown], 1):
            lines.append(f"    remedy {i} ({remedy.why}):")
            lines.append(f"      {cures.command(cures.with_remedy(diagnosis.overrides, remedy.overrides))}")
    return "\n".join(lines)


def one_line(diagnosis: Diagnosis) -> str:
    found = ", ".join(f.title for f in diagnosis.findings) or "healthy"
    return f"{diagnosis.run.name}: {found}  [{' '.join(diagnosis.overrides) or 'defaults'}]"


def runs_of(folder: str | None) -> tuple[Path, list[Path]]:
    """The folder named by run= and the run folders in it: itself, or the runs of a sweep; a cross-validation
    (data.cv) stands for its folds, the runs that trained."""
    if folder is None:
        raise UserError("give run=RUN_DIR: the folder of a dlopt train run (outputs/train/DATE/TIME) or a sweep's "
                        "folder (outputs/train/multirun/DATE/TIME)")
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise UserError(f"run={folder} does not exist; give the folder of a dlopt train run "
                        "(outputs/train/DATE/TIME) or a sweep's folder")
    runs = [path] if saved_run.is_run_folder(path) else saved_run.run_folders(path)
    if not runs:
        raise UserError(f"run={folder} is not a dlopt run folder (no .hydra/config.yaml in it or below it); give "
                        "the folder of a dlopt train run (outputs/train/DATE/TIME) or a sweep's folder")
    return path, [fold for run in runs for fold in
                  (saved_run.run_folders(run / "folds") if saved_run.cross_validation(run) else [run])]


def trained(diagnosis: Diagnosis) -> bool:
    """A run of dlopt train (not of eval, tune-lr or doctor itself): its config has a model and an optimizer."""
    return "model" in diagnosis.config and "optimizer" in diagnosis.config


# --- try=true: the remedies trained beside the original ----------------------------------------------------


def remedy_configs(diagnosis: Diagnosis, tries: list[tuple[symptoms.Finding, cures.Remedy]], folder: Path) -> list[str]:
    """A config group `remedy` in folder/remedy/: `original` and one option per remedy, each the overrides
    that differ between them (the overrides no remedy touches stay on the shared command line).
    Returns the shared overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    touched = {cures.key_of(o) for _, r in tries for o in r.overrides}
    # the same seed and epoch budget as the run, unless a remedy changes them
    epochs, seed = symptoms.epochs_budget(diagnosis.config), diagnosis.config.get("seed")
    pinned = ([f"trainer.max_epochs={epochs}"] if epochs else []) + ([f"seed={seed}"] if isinstance(seed, int) else [])
    overrides = cures.with_remedy(diagnosis.overrides, pinned)
    def mine(override: str) -> bool:  # a key a remedy sets, or a setting of a group whose option a remedy changes
        return cures.key_of(override) in touched or cures.key_of(override).split(".")[0] in touched

    shared = [o for o in overrides if not mine(o)]
    own = [o for o in overrides if mine(o)]
    parser = OverridesParser.create()
    group = folder / "remedy"
    group.mkdir(parents=True, exist_ok=True)
    for name, overrides in [("original", own), *((f"r{i}", cures.with_remedy(own, r.overrides))
                                                  for i, (_, r) in enumerate(tries, 1))]:
        values: dict[str, Any] = {}
        defaults = []
        for override in parser.parse_overrides(overrides):
            key = override.key_or_group
            if _is_group(key):
                defaults.append({f"override /{key}": override.value()})
            else:
                node = values
                *parents, leaf = key.split(".")
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = override.value()
        content = {"defaults": [*defaults, "_self_"], **values} if defaults else values
        (group / f"{name}.yaml").write_text("# @package _global_\n" + yaml.safe_dump(content, sort_keys=False))
    return shared


def _is_group(key: str) -> bool:
    from dlopt.apps import config_dir

    return "." not in key and (Path(config_dir()) / key).is_dir()


def try_remedies(diagnosis: Diagnosis, count: int, folder: Path, thresholds: dict[str, float],
                 extra: list[str]) -> list[dict[str, Any]]:
    """Train the original config and its top `count` remedies as one sweep (`dlopt train -m`) in
    `folder`, same seed and epoch budget; return one row per run: the symptom's measure and the
    monitored metric before (the original, trained again) and after."""
    tries = diagnosis.top_remedies(count)
    if not tries:
        raise UserError(f"run={diagnosis.run} has no symptom to remedy (healthy); nothing to try")
    shared = remedy_configs(diagnosis, tries, folder)
    options = ",".join(["original", *(f"r{i}" for i in range(1, len(tries) + 1))])
    args = ["-m", "--config-dir", str(folder), f"+remedy={options}", *shared,
            f"hydra.sweep.dir={folder}", *extra]
    log.info("trying %d remedies: dlopt train %s", len(tries), " ".join(shlex.quote(a) for a in args))
    done = subprocess.run([sys.executable, "-m", "dlopt", "train", *args], check=False)
    if done.returncode != 0:
        raise UserError(f"the sweep of remedies failed (exit {done.returncode}); see the runs in {folder}")
    runs = [run for run in saved_run.run_folders(folder) if run != folder]
    results = {}
    for run in runs:
        choice = next((o.partition("=")[2] for o in saved_run.run_overrides(run, str(run)) if o.startswith("+remedy=")),
                      None)
        results[choice] = examine(run, thresholds, f"run={run}")
    before = results.get("original")
    rows = []
    for i, (finding, remedy) in enumerate(tries, 1):
        after = results.get(f"r{i}")
        rows.append({"symptom": finding.title, "remedy": " ".join(remedy.overrides), "measure": finding.measure_name,
                     "measure_before": _measure(before, finding.symptom, thresholds),
                     "measure_after": _measure(after, finding.symptom, thresholds),
                     "monitor": diagnosis.metrics.get("monitor") or diagnosis.config.get("monitor"),
                     "objective_before": _metric(before, "objective"), "objective_after": _metric(after, "objective"),
                     "test_acc_before": _metric(before, "test/acc"), "test_acc_after": _metric(after, "test/acc"),
                     "symptom_gone": after is not None and all(f.symptom != finding.symptom for f in after.findings),
                     "run": str(after.run) if after else None})
    return rows


def _measure(diagnosis: Optional[Diagnosis], symptom: str, thresholds: dict[str, float]) -> Optional[float]:
    """The symptom's measure in a run, a symptom there or not; None when the run did not run or record it."""
    if diagnosis is None:
        return None
    return symptoms.measure(symptom, diagnosis.records, diagnosis.history, diagnosis.metrics, diagnosis.config,
                            thresholds)


def _metric(diagnosis: Optional[Diagnosis], key: str) -> Optional[float]:
    value = diagnosis.metrics.get(key) if diagnosis else None
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _show(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if math.isfinite(value) and value == int(value) and abs(value) < 1e6:  # a count: optimizer steps
        return str(int(value))
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def tried_table(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        gone = "gone" if row["symptom_gone"] else "still there"
        lines.append(f"  {row['symptom']} -> {row['remedy']}: {row['measure']} {_show(row['measure_before'])} -> "
                     f"{_show(row['measure_after'])} ({gone}); {row['monitor']} {_show(row['objective_before'])} -> "
                     f"{_show(row['objective_after'])}; test/acc {_show(row['test_acc_before'])} -> "
                     f"{_show(row['test_acc_after'])}")
    return "\n".join(lines)


def save(report: dict[str, Any], folder: Path) -> Path:
    """Write doctor's report in its own output folder (never in the run folder it read, a record); its path."""
    write_json(report, folder / REPORT)
    return folder / REPORT
